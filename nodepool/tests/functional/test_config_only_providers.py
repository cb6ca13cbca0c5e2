"""Providers of drivers this build understands but cannot serve yet (gce,
azure, ibmvpc) are left out by the launcher and the builder,
as a provider that cannot be loaded is: reported once, with the file and
the reason, while the other providers serve."""

from __future__ import annotations

import logging

from nodepool.tests.functional.builder_support import base_config, diskimage, provider
from nodepool.tests.helpers import fake_config, wait_for
from nodepool.zk import models

UNSERVED_PROVIDERS = """\
  - name: gce-main
    driver: gce
    project: my-project
    region: us-central1
    zone: us-central1-a
    cloud-images:
      - name: debian
        image-family: debian-12
        image-project: debian-cloud
    pools:
      - name: main
        max-servers: 4
        labels:
          - name: gce-label
            cloud-image: debian
            instance-type: e2-small
"""

NOT_SERVED = ("its configuration is understood, but launching nodes with it is not "
              "implemented in this build yet; this provider is left out")


def test_launcher_serves_the_others_and_reports_them_left_out(
        zk_info, zuul, launcher_factory, tmp_path, caplog):
    text = fake_config(zk_info, labels=[{"name": "fake-label"}, {"name": "gce-label"}],
                       pools=("      - name: main\n        max-servers: 20\n"
                              "        labels:\n"
                              "          - name: fake-label\n"
                              "            cloud-image: fake-image\n"
                              "            min-ram: 8192\n"))
    with caplog.at_level(logging.WARNING, logger="nodepool.config"):
        launcher = launcher_factory(text + UNSERVED_PROVIDERS)
    request = zuul.wait_request(zuul.submit(["fake-label"]))
    assert request["state"] == "fulfilled"
    assert zuul.node(request["nodes"][0])["provider"] == "fake-provider"
    assert set(launcher.providers) == {"fake-provider"}
    assert {w.provider_name for w in launcher.pool_workers.values()} == {"fake-provider"}
    assert set(launcher.config.left_out) == {"gce-main"}
    # A label only they offer is served by no pool: declined, so it fails
    # at once instead of waiting forever.
    [worker] = launcher.pool_workers.values()
    request = zuul.wait_request(zuul.submit(["gce-label"]))
    assert request["state"] == "failed" and request["declined_by"] == [worker.id]
    errors = {r.getMessage() for r in caplog.records if r.levelno == logging.ERROR}
    config_path = str(tmp_path / "nodepool.yaml")
    [message] = [e for e in errors if e.startswith("Provider gce-main is left out")]
    assert f"{config_path}:" in message
    assert f"provider 'gce-main' uses driver 'gce': {NOT_SERVED}" in message


def test_builder_uploads_to_the_others_only(zk_info, tmp_path, builder_factory, images,
                                            caplog):
    config = base_config(zk_info, tmp_path)
    config["diskimages"] = [diskimage()]
    config["labels"] = [{"name": "azure-label"}]
    config["providers"] = [provider(), {
        "name": "azure-main", "driver": "azure", "location": "centralus",
        "resource-group": "nodepool", "resource-group-location": "centralus",
        "auth-path": str(tmp_path / "azure.json"),
        "diskimages": [{"name": "fake-image"}],
        "pools": [{"name": "main", "max-servers": 2, "labels": [
            {"name": "azure-label", "diskimage": "fake-image",
             "hardware-profile": {"vm-size": "Standard_B1ls"}}]}]}]
    with caplog.at_level(logging.ERROR, logger="nodepool.config"):
        builder = builder_factory(config)
        [upload] = wait_for(lambda: [u for u in images.uploads("fake-image", "fake-provider")
                                     if u.state == models.READY], what="the fake upload")
    # The upload worker handled the build for every provider it serves:
    # the Azure provider got no upload record and no VHD was built for it.
    assert images.upload_keys("fake-image", "azure-main") == set()
    [build] = images.builds("fake-image")
    assert build.formats == ["qcow2"]
    assert set(builder.providers) == {"fake-provider"}
    [message] = [r.getMessage() for r in caplog.records
                 if r.getMessage().startswith("Provider azure-main is left out")]
    assert f"provider 'azure-main' uses driver 'azure': {NOT_SERVED}" in message
    assert upload.provider_name == "fake-provider"
