"""Time zones stored in users.timezone before migration 0014 refused them (issue 27): none is a key of tzdata, and
PostgreSQL or zoneinfo took some of them."""

BAD_TIME_ZONES = ("Mars/Olympus", "", "america/new_york", "America/New_York ", "America/New_York\n", "localtime",
                  "+05:30")
