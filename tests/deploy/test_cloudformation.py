"""The CloudFormation template: cfn-lint, and real deploys on moto with the docs' own commands
(the seed's commands with Gantry's names), read back resource by resource."""

import ast
import json
import re

import pytest

from cfn import (against_moto, doc_deploy_command, doc_deploy_commands, launch_template_user_data,
                 template)
from conftest import REGION, ROOT, TEMPLATE, UNIT, run, tool

MANAGED_POLICIES = ["AutoScalingReadOnlyAccess", "CloudWatchAgentServerPolicy",
                    "AmazonSSMManagedInstanceCore"]
BUCKET = "012345678901-gantry-downloads-test"
CUSTOM_ROLE = "default-worker-role"

# name -> (the docs' example it runs, extra parameters appended as the docs' snippet shows)
SCENARIOS = {
    "plain": ({}, {}),
    "instance-role": ({"InstanceRoleName": CUSTOM_ROLE}, {}),
    "proxy": ({"HttpProxyConfig": "", "HttpsProxyConfig": "", "NoProxyConfig": ""}, {}),
    "ca-certificates": ({"AdditionalRootCAsSecretName": ""}, {}),
    "custom-user-data": ({}, {"CustomUserDataSecretName": "gantry/userdata"}),
}


def test_cfn_lint_finds_nothing():
    cfn_lint = tool("cfn-lint")
    result = run([cfn_lint, "--non-zero-exit-code", "error", str(TEMPLATE)], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # Not even warnings or informational findings.
    result = run([cfn_lint, "--non-zero-exit-code", "informational", str(TEMPLATE)], check=False)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout


def test_parameters_are_the_seeds():
    params = template()["Parameters"]
    required = {name for name, p in params.items() if "Default" not in p}
    assert required == {"BinariesBucket", "SecretName", "SecurityGroups", "Subnets", "ImageId"}
    for name in ["InstanceRoleName", "CustomUserDataSecretName", "HttpProxyConfig", "HttpsProxyConfig",
                 "NoProxyConfig", "AdditionalRootCAsSecretName"]:
        assert params[name]["Default"] == "", name
    assert params["Subnets"]["Type"] == "List<AWS::EC2::Subnet::Id>"
    assert params["SecurityGroups"]["Type"] == "List<AWS::EC2::SecurityGroup::Id>"


def test_docs_show_the_seeds_deploy_examples():
    # The seed shows four complete examples: plain, custom role, proxies, custom CAs.
    assert len(doc_deploy_commands()) == 4
    for having in SCENARIOS.values():
        argv = doc_deploy_command(**having[0])
        assert argv[argv.index("--template-file") + 1] == "cloudformation/workerpool.yaml"
        assert argv[argv.index("--capabilities") + 1] == "CAPABILITY_NAMED_IAM"


def test_managed_policies_are_real_aws_managed_policies(moto):
    # moto ignores ManagedPolicyArns on a role, so the attachment is checked in the template and
    # the names against the managed policies moto loads (MOTO_IAM_LOAD_MANAGED_POLICIES).
    arns = template()["Resources"]["InstanceRole"]["Properties"]["ManagedPolicyArns"]
    names = [arn["Fn::Sub"].rsplit("/", 1)[1] for arn in arns]
    assert names == MANAGED_POLICIES
    iam = moto.client("iam")
    for name in names:
        policy = iam.get_policy(PolicyArn=f"arn:aws:iam::aws:policy/{name}")
        assert policy["Policy"]["PolicyName"] == name


@pytest.fixture(scope="module")
def network(moto):
    net = moto.network()
    # The existing role that InstanceRoleName names.
    moto.client("iam").create_role(RoleName=CUSTOM_ROLE, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "ec2.amazonaws.com"}}]}))
    return net


def secret_arn(name: str) -> str:
    return f"arn:aws:secretsmanager:{REGION}:123456789012:secret:{name}-??????"


def user_data_settings(user_data: str) -> dict:
    return dict(re.findall(r"^([A-Z0-9_]+)='([^']*)'$", user_data, re.M))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_deploy_with_the_docs_command_and_read_back(moto, network, scenario, tmp_path):
    having, extra = SCENARIOS[scenario]
    stack = f"gantry-{scenario}-worker-pool"
    argv = against_moto(doc_deploy_command(**having), endpoint=moto.url, stack=stack,
                        network=network, bucket=BUCKET, extra=extra)
    # Run from a directory laid out like the release archive, as the docs say.
    (tmp_path / "cloudformation").mkdir()
    (tmp_path / "cloudformation" / "workerpool.yaml").write_text(TEMPLATE.read_text())
    moto.aws(*argv, cwd=tmp_path)
    params = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if "=" in a and not a.startswith("--")}

    status = moto.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    assert status["StackStatus"] == "CREATE_COMPLETE"
    resources = moto.stack_resources(stack)

    # The group: over the given subnets, from the launch template, tagged for the drain policy.
    group_name = resources["AutoScalingGroup"]["PhysicalResourceId"]
    group = moto.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[group_name])["AutoScalingGroups"][0]
    assert set(group["VPCZoneIdentifier"].split(",")) == set(network["subnets"])
    lt_id = resources["LaunchTemplate"]["PhysicalResourceId"]
    assert group["LaunchTemplate"]["LaunchTemplateId"] == lt_id
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (1, 3, 1)
    assert {"Key": "gantry:stack", "Value": stack} in [
        {"Key": t["Key"], "Value": t["Value"]} for t in group["Tags"]]
    assert len(group["Instances"]) == 1
    ec2 = moto.client("ec2")
    instance = ec2.describe_instances(
        InstanceIds=[group["Instances"][0]["InstanceId"]])["Reservations"][0]["Instances"][0]
    assert instance["SubnetId"] in network["subnets"]
    assert instance["ImageId"] == network["ami"]

    # The launch template: IMDSv2 only, hop limit 1, the security group, the AMI, the profile.
    data = ec2.describe_launch_template_versions(
        LaunchTemplateId=lt_id)["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["MetadataOptions"] == {"HttpEndpoint": "enabled", "HttpTokens": "required",
                                       "HttpPutResponseHopLimit": 1}
    assert data["SecurityGroupIds"] == [network["security_group"]]
    assert data["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert data["ImageId"] == network["ami"]
    assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    profile_name = resources["InstanceProfile"]["PhysicalResourceId"]
    assert data["IamInstanceProfile"]["Arn"].endswith(f":instance-profile/{profile_name}")

    # The role: the one named, or the stack's own with least privilege.
    iam = moto.client("iam")
    roles = iam.get_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"]["Roles"]
    assert len(roles) == 1
    role = roles[0]
    if scenario == "instance-role":
        assert "InstanceRole" not in resources
        assert role["RoleName"] == CUSTOM_ROLE
    else:
        assert role["RoleName"] == resources["InstanceRole"]["PhysicalResourceId"]
        trust = role["AssumeRolePolicyDocument"]["Statement"]
        assert trust == [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                          "Action": "sts:AssumeRole"}]
        policy = iam.get_role_policy(RoleName=role["RoleName"], PolicyName="gantry-worker")["PolicyDocument"]
        if isinstance(policy, str):
            # moto keeps an inline policy from CloudFormation as the repr of a Python dict.
            policy = ast.literal_eval(policy) if policy.startswith("{'") else json.loads(policy)
        statements = {s["Sid"]: s for s in policy["Statement"]}
        assert set(statements) == {"DownloadLauncher", "ReadSecrets", "DrainBeforeTermination"}
        assert statements["DownloadLauncher"]["Action"] == "s3:GetObject"
        assert statements["DownloadLauncher"]["Resource"] == [
            f"arn:aws:s3:::{BUCKET}/gantry-launcher", f"arn:aws:s3:::{BUCKET}/gantry-launcher.sha256"]
        secrets = [params["SecretName"]] + [
            params[p] for p in ("CustomUserDataSecretName", "AdditionalRootCAsSecretName") if p in params]
        assert statements["ReadSecrets"]["Action"] == "secretsmanager:GetSecretValue"
        # moto leaves an AWS::NoValue list item as null, where CloudFormation drops it.
        granted = [r for r in statements["ReadSecrets"]["Resource"] if r is not None]
        assert sorted(granted) == sorted(map(secret_arn, secrets))
        drain = statements["DrainBeforeTermination"]
        assert drain["Condition"] == {"StringEquals": {"autoscaling:ResourceTag/gantry:stack": stack}}

    # The user data holds the parameters and passes shellcheck.
    user_data = launch_template_user_data(moto, lt_id)
    assert len(user_data.encode()) < 16384, "EC2 refuses user data over 16 KiB"
    settings = user_data_settings(user_data)
    assert settings["REGION"] == REGION and settings["STACK_NAME"] == stack
    for param, var in [("BinariesBucket", "BINARIES_BUCKET"), ("SecretName", "SECRET_NAME"),
                       ("CustomUserDataSecretName", "CUSTOM_USER_DATA_SECRET_NAME"),
                       ("AdditionalRootCAsSecretName", "ADDITIONAL_ROOT_CAS_SECRET_NAME"),
                       ("HttpProxyConfig", "HTTP_PROXY_CONFIG"), ("HttpsProxyConfig", "HTTPS_PROXY_CONFIG"),
                       ("NoProxyConfig", "NO_PROXY_CONFIG")]:
        assert settings[var] == params.get(param, ""), var
    script = tmp_path / "user-data.sh"
    script.write_text(user_data)
    result = run([tool("shellcheck"), "--severity=style", str(script)], check=False)
    assert result.returncode == 0, result.stdout


def test_user_data_installs_the_shipped_systemd_unit():
    # The user data carries its own copy of the unit (it must be self-contained); it must not drift
    # from deploy/systemd/gantry-launcher.service, which plain hosts use.
    body = template()["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]
    script = body["Fn::Base64"]["Fn::Join"][1][1]
    embedded = re.search(r"gantry-launcher\.service <<'UNIT'\n(.*?)^UNIT$", script, re.S | re.M).group(1)
    assert embedded == UNIT.read_text()


def test_termination_waits_for_the_drain():
    # moto only fakes lifecycle hooks, so this one is checked in the template.
    resources = template()["Resources"]
    hook = resources["DrainLifecycleHook"]["Properties"]
    assert hook["AutoScalingGroupName"] == {"Ref": "AutoScalingGroup"}
    assert hook["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
    assert hook["LifecycleHookName"] == "gantry-drain"
    assert hook["DefaultResult"] == "CONTINUE"
    # The watcher on the instance names the same hook.
    body = resources["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]
    assert "DRAIN_HOOK_NAME=gantry-drain\n" in body["Fn::Base64"]["Fn::Join"][1][1]


def test_template_fits_a_direct_deploy():
    # Above 51,200 bytes `aws cloudformation deploy` needs an S3 bucket for the template.
    assert len(TEMPLATE.read_bytes()) < 51200
    assert (ROOT / "docs").is_dir()
