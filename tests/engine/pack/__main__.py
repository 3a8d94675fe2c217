"""Mandatory rules on a resource and on the whole stack, so a test can see the CLI stop on a pack's
verdict and when, and an advisory one that speaks on every run, so a test can see the pack ran."""

from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

MAX_LENGTH = 64
# Judged on the whole stack, which the engine does only after an `up` has run every step.
MAX_STACK_LENGTH = 48


def _bounded_password(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == "random:index/randomPassword:RandomPassword" and args.props["length"] > MAX_LENGTH:
        report_violation(f"a password longer than {MAX_LENGTH} characters")


def _stack_bounded_password(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    for resource in args.resources:
        password = resource.resource_type == "random:index/randomPassword:RandomPassword"
        if password and resource.props["length"] > MAX_STACK_LENGTH:
            report_violation(f"the stack holds a password longer than {MAX_STACK_LENGTH} characters")


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
        StackValidationPolicy(
            name="stack-bounded-password",
            description=f"The stack's passwords are at most {MAX_STACK_LENGTH} characters.",
            validate=_stack_bounded_password,
        ),
        ResourceValidationPolicy(
            name="pet-seen",
            description="Says that the pack ran.",
            validate=_pet_seen,
            enforcement_level=EnforcementLevel.ADVISORY,
        ),
    ],
)
