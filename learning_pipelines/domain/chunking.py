"""How many learners one pass over the warehouse handles at a time."""

LEARNER_CHUNK = 200  # learners per chunk: memory stays flat whatever the number of learners
