"""A mandatory rule, so a test can see the CLI stop on a pack's verdict, and an advisory one that
speaks on every run, so a test can see the pack ran at all."""

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


def _pet_seen(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == "random:index/randomPet:RandomPet":
        report_violation("a pet was seen")


PolicyPack(
    name="engine-check",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        ResourceValidationPolicy(
            name="bounded-password",
            description=f"Passwords are at most {MAX_LENGTH} characters.",
            validate=_bounded_password,
        ),
        ResourceValidationPolicy(
            name="pet-seen",
            description="Says that the pack ran.",
            validate=_pet_seen,
            enforcement_level=EnforcementLevel.ADVISORY,
        ),
    ],
)
