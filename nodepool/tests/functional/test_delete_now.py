"""``nodepool delete --now`` with no launcher running: the command deletes
the node through its provider itself, as upstream does, for every driver
(the fake cloud, OpenStack through the simulator, static hosts behind a
real sshd).

Each test starts a launcher only to get a real node, stops it, and then
runs the command.
"""

from __future__ import annotations

from pathlib import Path

from nodepool.cmd.context import CommandError, Context
from nodepool.cmd.nodepoolcmd import build_parser, cmd_delete
from nodepool.tests.functional import test_openstack_driver as openstack_tests
from nodepool.tests.functional import test_static_driver as static_tests
from nodepool.tests.functional.test_commands import CLI
from nodepool.tests.helpers import fake_config, wait_for

# Fixtures and helpers of the driver tests, shared here.
sim = openstack_tests.sim
clouds_yaml = openstack_tests.clouds_yaml
config_text = openstack_tests.config_text
provider_yaml = openstack_tests.provider_yaml
sshd = static_tests.sshd
host = static_tests.host
static_config = static_tests.static_config
ready = static_tests.ready
records = static_tests.records
wait_ready = static_tests.wait_ready
STATIC_PROVIDER = static_tests.PROVIDER


def ready_node(zuul, label: str) -> str:
    """A node fulfilled for a request (left ready, allocated)."""
    request = zuul.wait_request(zuul.submit([label]))
    assert request["state"] == "fulfilled"
    [node_id] = request["nodes"]
    return node_id


def delete_now_in_process(config: Path, node_id: str) -> int:
    """The command in this process (the fake cloud lives in the process
    that uses it)."""
    ctx = Context(build_parser().parse_args(["-c", str(config), "delete", "--now", node_id]))
    try:
        return cmd_delete(ctx)
    finally:
        ctx.close()


def test_fake_cloud_node_deleted_without_a_launcher(zk_info, zuul, launcher_factory,
                                                    tmp_path, capsys):
    from nodepool.driver.fake.cloud import FakeCloud
    config = fake_config(zk_info)
    launcher = launcher_factory(config)
    node_id = ready_node(zuul, "fake-label")
    server_id = zuul.node(node_id)["external_id"]
    launcher.stop()
    cloud = FakeCloud.for_provider("fake-provider")
    assert [s.id for s in cloud.list_servers()] == [server_id]

    assert delete_now_in_process(tmp_path / "nodepool.yaml", node_id) == 0
    assert zuul.node(node_id) is None
    assert cloud.list_servers() == []
    assert node_id not in capsys.readouterr().out


def test_openstack_node_deleted_without_a_launcher(zk_info, zuul, launcher_factory, sim,
                                                   clouds_yaml, tmp_path):
    launcher = launcher_factory(config_text(zk_info, provider_yaml()))
    node_id = ready_node(zuul, "small")
    server_id = zuul.node(node_id)["external_id"]
    launcher.stop()
    assert [s.id for s in sim.servers()] == [server_id]

    # A separate process: it reaches the simulated cloud over HTTP, as a
    # real cloud, through the clouds.yaml in the environment.
    out = CLI(tmp_path / "nodepool.yaml").ok("delete", "--now", node_id)
    assert node_id not in out
    assert zuul.node(node_id) is None
    assert sim.servers() == []


def test_cloud_refusing_the_delete_leaves_the_record_for_a_launcher(
        zk_info, zuul, launcher_factory, sim, clouds_yaml, tmp_path):
    config = config_text(zk_info, provider_yaml())
    launcher = launcher_factory(config)
    node_id = ready_node(zuul, "small")
    server_id = zuul.node(node_id)["external_id"]
    launcher.stop()
    sim.fail_next_deletes(100)
    cli = CLI(tmp_path / "nodepool.yaml")

    err = cli.fails("delete", "--now", node_id)
    assert len(err.strip().splitlines()) == 1, err
    assert f"cannot delete node {node_id} now through provider os-provider" in err
    assert f"deleting server {server_id} in sim failed" in err
    assert "stays 'deleting'" in err and f"'nodepool delete --now {node_id}' again" in err
    record = zuul.node(node_id)
    assert record["state"] == "deleting"
    assert not zuul.client.get_children(f"/nodepool/nodes/{node_id}/lock")
    assert [s.id for s in sim.servers()] == [server_id]

    # Once the cloud accepts again, a launcher finishes the job.
    sim.fail_next_deletes(0)
    launcher_factory(config, name="again.yaml")
    wait_for(lambda: zuul.node(node_id) is None, timeout=60, what="launcher deletes it")
    wait_for(lambda: sim.servers() == [], what="server deleted")


def test_provider_missing_from_the_local_config(zk_info, zuul, launcher_factory, tmp_path):
    launcher = launcher_factory(fake_config(zk_info, name="fake-elsewhere"))
    node_id = ready_node(zuul, "fake-label")
    launcher.stop()
    local = tmp_path / "local.yaml"
    local.write_text(fake_config(zk_info))

    err = CLI(local).fails("delete", "--now", node_id)
    assert len(err.strip().splitlines()) == 1, err
    assert (f"cannot delete node {node_id} now: its provider 'fake-elsewhere' is not "
            f"in {local}") in err
    assert "configured providers: fake-provider" in err
    assert zuul.node(node_id)["state"] == "deleting"


def test_static_node_deleted_and_its_host_registered_again(
        zk_info, zuul, launcher_factory, sshd, tmp_path):
    server = sshd(2)
    launcher = launcher_factory(static_config(zk_info, [host(server, "label-a")]))
    [first] = wait_ready(zuul, server)
    launcher.stop()

    CLI(tmp_path / "nodepool.yaml").ok("delete", "--now", first["_id"])
    assert zuul.node(first["_id"]) is None
    # No launcher runs: the command itself gave the slot back.
    [second] = ready(zuul, server)
    assert second["_id"] != first["_id"]
    assert (second["provider"], second["slot"], second["host_keys"]) == (
        STATIC_PROVIDER, 0, [server.host_key])
    assert len(records(zuul, server)) == 1


def test_unreachable_static_host_is_left_for_a_launcher(
        zk_info, zuul, launcher_factory, sshd, tmp_path):
    server = sshd(2)
    launcher = launcher_factory(static_config(zk_info, [host(server, "label-a")]))
    [first] = wait_ready(zuul, server)
    launcher.stop()
    server.stop()

    CLI(tmp_path / "nodepool.yaml").ok("delete", "--now", first["_id"])
    assert records(zuul, server) == []
    # The slot is not lost: a launcher registers the host once it answers.
    server.start()
    launcher_factory(static_config(zk_info, [host(server, "label-a")]), name="again.yaml")
    wait_ready(zuul, server)


def test_error_is_a_command_error_in_process(zk_info, zuul, launcher_factory, tmp_path):
    from nodepool.driver.fake.cloud import FakeCloud
    launcher = launcher_factory(fake_config(zk_info))
    node_id = ready_node(zuul, "fake-label")
    launcher.stop()
    FakeCloud.for_provider("fake-provider").fail_next_deletes(1)
    try:
        delete_now_in_process(tmp_path / "nodepool.yaml", node_id)
    except CommandError as e:
        assert "Injected failure deleting server" in str(e)
    else:
        raise AssertionError("delete --now succeeded against a refusing cloud")
    assert zuul.node(node_id)["state"] == "deleting"
    assert delete_now_in_process(tmp_path / "nodepool.yaml", node_id) == 0
    assert zuul.node(node_id) is None
