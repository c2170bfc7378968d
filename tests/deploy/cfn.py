"""Helpers for the CloudFormation tests: the docs' deploy commands, the template, the user data."""

import base64
import re
import shlex

import yaml

from conftest import DOCS, TEMPLATE

# The example values in the docs' commands, and what stands for them against moto.
DOC_BUCKET = "012345678901-gantry-downloads"
DOC_SECURITY_GROUP = "sg-0d1e157a19ba2106f"
DOC_SUBNETS = "subnet-44ca1b771ca7bcc1a,subnet-6b61ec08772f47ba2"
DOC_AMI = "ami-0ead0234bef4f51b0"
DOC_STACK = "gantry-default-worker-pool"


def doc_deploy_commands() -> list[list[str]]:
    """Every complete `aws cloudformation deploy` example in the operator docs, as argv lists."""
    blocks = re.findall(r"```shell\n(.*?)```", DOCS.read_text(), re.S)
    commands = []
    for block in blocks:
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            if line.startswith("aws cloudformation deploy") and "<region>" not in line:
                commands.append(shlex.split(line))
    return commands


def doc_deploy_command(**having: str) -> list[str]:
    """The docs' deploy example whose parameter overrides hold exactly the extra keys given."""
    base = {"BinariesBucket", "SecretName", "SecurityGroups", "Subnets", "ImageId"}
    for argv in doc_deploy_commands():
        keys = {a.split("=", 1)[0] for a in argv if "=" in a and not a.startswith("--")}
        if keys == base | set(having):
            return argv
    raise AssertionError(f"the docs have no deploy example with exactly {sorted(base | set(having))}")


def against_moto(argv: list[str], *, endpoint: str, stack: str, network: dict, bucket: str,
                 overrides: dict | None = None, extra: dict | None = None) -> list[str]:
    """The docs' command, run against moto: the docs' example IDs swapped for moto's, a stack name
    of the test's own, --endpoint-url added and --no-cli-pager (AWS CLI v2 only) dropped."""
    swap = {
        DOC_BUCKET: bucket,
        DOC_SECURITY_GROUP: network["security_group"],
        DOC_SUBNETS: ",".join(network["subnets"]),
        DOC_AMI: network["ami"],
        DOC_STACK: stack,
    }
    out = []
    for arg in argv:
        if arg == "--no-cli-pager":
            continue
        if "=" in arg and not arg.startswith("--"):
            key, value = arg.split("=", 1)
            value = (overrides or {}).get(key, swap.get(value, value))
            arg = f"{key}={value}"
        out.append(swap.get(arg, arg))
    if extra:
        at = out.index("--capabilities")
        out[at:at] = [f"{k}={v}" for k, v in extra.items()]
    assert out[:3] == ["aws", "cloudformation", "deploy"], out
    return out[1:] + ["--endpoint-url", endpoint]


class _Loader(yaml.SafeLoader):
    pass


def _tagged(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {f"Fn::{suffix}" if suffix not in ("Ref", "Condition") else suffix: value}


_Loader.add_multi_constructor("!", _tagged)


def template() -> dict:
    """The template, with short-form intrinsics (!Ref, !Sub, ...) as their long forms."""
    return yaml.load(TEMPLATE.read_text(), _Loader)


def launch_template_user_data(moto, launch_template_id: str) -> str:
    versions = moto.client("ec2").describe_launch_template_versions(
        LaunchTemplateId=launch_template_id)["LaunchTemplateVersions"]
    return base64.b64decode(versions[0]["LaunchTemplateData"]["UserData"]).decode()
