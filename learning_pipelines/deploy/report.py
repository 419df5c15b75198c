"""What `deploy verify` found: one result per check, printed as a table or as one JSON object."""

from __future__ import annotations

import dataclasses
import json

from learning_pipelines.deploy.targets import Target


@dataclasses.dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    remedy: str  # what to do; "" when ok


@dataclasses.dataclass(frozen=True)
class Report:
    target: Target
    checks: list[CheckResult]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def as_json(self) -> str:
        return json.dumps({"ok": self.ok, "checks": [dataclasses.asdict(check) for check in self.checks]}, indent=2)

    def render(self) -> str:
        width = max(len(check.name) for check in self.checks) + 2
        failed = sum(not check.ok for check in self.checks)
        lines = ["deploy verify:", *self.target.lines(), "",
                 f"{'CHECK':<{width}}{'STATUS':<8}DETAIL"]
        for check in self.checks:
            lines.append(f"{check.name:<{width}}{'ok' if check.ok else 'FAIL':<8}{check.detail}")
            if not check.ok:
                lines.append(f"{'':<{width + 8}}what to do: {check.remedy}")
        lines += ["", "all checks passed" if not failed else f"{failed} of {len(self.checks)} check(s) failed"]
        return "\n".join(lines)
