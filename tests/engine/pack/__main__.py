"""One mandatory rule, so a test can see the CLI run a Python pack and stop on its verdict."""

from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

MAX_LENGTH = 64


def _bounded_password(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == "random:index/randomPassword:RandomPassword" and args.props["length"] > MAX_LENGTH:
        report_violation(f"a password longer than {MAX_LENGTH} characters")


PolicyPack(
    name="engine-check",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        ResourceValidationPolicy(
            name="bounded-password",
            description=f"Passwords are at most {MAX_LENGTH} characters.",
            validate=_bounded_password,
        )
    ],
)
