"""The cold tier of an S3 repository: a bucket lifecycle rule, owned by verger.

Old backups move to GLACIER by a lifecycle rule with the ID ``verger-cold-tier``
that covers only the repository's prefix. verger writes that one rule and
leaves every other rule of the bucket as it found it:

    apply_lifecycle(client, "acme-backups", "prod/pgbackrest", 90)
    check_lifecycle(client, "acme-backups", "prod/pgbackrest", 90)  # -> None

``prefix`` is the repository's folder in the bucket; ``prod/x``, ``/prod/x``
and ``prod/x/`` mean the same folder, and an empty prefix means the whole
bucket. Errors other than "no lifecycle configuration" (an unknown bucket,
denied access, an unreachable endpoint) raise ``BackupError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import BotoCoreError, ClientError

from verger.errors import BackupError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import LifecycleRuleTypeDef

RULE_ID = "verger-cold-tier"
STORAGE_CLASS = "GLACIER"

Rule = dict[str, Any]


def apply_lifecycle(client: S3Client, bucket: str, prefix: str, days: int) -> bool:
    """Write the cold-tier rule, keeping the bucket's other rules intact.

    Returns whether the bucket's lifecycle configuration was changed; a rule
    already as wanted is not written again.
    """
    wanted = cold_rule(prefix, days)
    rules = read_rules(client, bucket)
    ours = [rule for rule in rules if rule.get("ID") == RULE_ID]
    if len(ours) == 1 and difference(ours[0], wanted) is None:
        return False

    # The other rules go back as S3 sent them; the stubs type them as dicts.
    others = [rule for rule in rules if rule.get("ID") != RULE_ID]
    new_rules = cast("list[LifecycleRuleTypeDef]", [*others, wanted])
    try:
        client.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": new_rules}
        )
    except (ClientError, BotoCoreError) as error:
        message = f"cannot write the lifecycle rules of bucket {bucket}"
        raise s3_error(message, error) from error
    return True


def check_lifecycle(
    client: S3Client, bucket: str, prefix: str, days: int
) -> str | None:
    """None when the cold-tier rule is in place as wanted, else what is wrong."""
    wanted = cold_rule(prefix, days)
    ours = [rule for rule in read_rules(client, bucket) if rule.get("ID") == RULE_ID]
    if not ours:
        return (
            f"the bucket has no lifecycle rule moving backups to cold storage "
            f"after {days} days"
        )
    return difference(ours[0], wanted)


def difference(rule: Rule, wanted: Rule) -> str | None:
    """How ``rule`` differs from the ``wanted`` cold-tier rule, in one sentence."""
    name = f"the bucket's lifecycle rule {RULE_ID}"
    if rule.get("Status") != "Enabled":
        return f"{name} is disabled"

    covers, want_covers = rule_prefix(rule), wanted["Filter"]["Prefix"]
    if covers != want_covers:
        return f"{name} covers {shown(covers)}, not {shown(want_covers)}"

    transitions = rule.get("Transitions") or []
    if steps(transitions) != steps(wanted["Transitions"]):
        step = wanted["Transitions"][0]
        return (
            f"{name} {describe(transitions)}, not to {step['StorageClass']} "
            f"after {step['Days']} days"
        )

    if rule.get("Expiration") or rule.get("NoncurrentVersionExpiration"):
        return f"{name} also deletes backups, which only verger's retention may do"
    return None


def cold_rule(prefix: str, days: int) -> Rule:
    """The rule moving every object under ``prefix`` to GLACIER after ``days``."""
    if days < 0:
        raise BackupError(
            f"the cold tier cannot start after a negative number of days ({days})",
            "set backup.repository.cold_after to a duration such as 90d",
        )
    return {
        "ID": RULE_ID,
        "Status": "Enabled",
        "Filter": {"Prefix": folder(prefix)},
        "Transitions": [{"Days": days, "StorageClass": STORAGE_CLASS}],
    }


def folder(prefix: str) -> str:
    """The key prefix of a folder: no leading slash, one trailing slash."""
    stripped = prefix.strip("/")
    return f"{stripped}/" if stripped else ""


def read_rules(client: S3Client, bucket: str) -> list[Rule]:
    """The bucket's lifecycle rules; none when it has no lifecycle configuration."""
    try:
        answer = client.get_bucket_lifecycle_configuration(Bucket=bucket)
    except (ClientError, BotoCoreError) as error:
        if error_code(error) == "NoSuchLifecycleConfiguration":
            return []
        message = f"cannot read the lifecycle rules of bucket {bucket}"
        raise s3_error(message, error) from error
    return [dict(rule) for rule in answer.get("Rules", [])]


def rule_prefix(rule: Rule) -> str | None:
    """The prefix a rule covers, in either the current or the legacy form."""
    condition = rule.get("Filter")
    if isinstance(condition, dict):
        if set(condition) - {"Prefix"}:
            return None
        return str(condition.get("Prefix", ""))
    return str(rule.get("Prefix", ""))


def shown(prefix: str | None) -> str:
    if prefix is None:
        return "objects chosen by tags or size"
    return f"'{prefix}'" if prefix else "the whole bucket"


def steps(transitions: list[Any]) -> list[tuple[object, object, object]]:
    """Transitions reduced to what they mean, whatever else S3 sends with them."""
    return [
        (step.get("Days"), step.get("Date"), step.get("StorageClass"))
        for step in transitions
    ]


def describe(transitions: list[Any]) -> str:
    if not transitions:
        return "moves nothing"
    moves = []
    for step in transitions:
        when = step.get("Days")
        when = f"after {when} days" if when is not None else f"on {step.get('Date')}"
        moves.append(f"to {step.get('StorageClass')} {when}")
    return "moves backups " + " and ".join(moves)


def error_code(error: Exception) -> str | None:
    if isinstance(error, ClientError):
        return error.response.get("Error", {}).get("Code")
    return None


def s3_error(message: str, error: Exception) -> BackupError:
    """A BackupError for a failed S3 call; the caller chains the cause."""
    code = error_code(error)
    if code is not None:
        reason = f"{message}: {code}"
        hint = (
            "check that the bucket exists and the key may read and write its lifecycle"
        )
    else:
        reason = f"{message}: {error}"
        hint = "check backup.repository.s3.endpoint and that the server is reachable"
    return BackupError(reason, hint, detail=str(error))
