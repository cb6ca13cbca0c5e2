"""What Zuul 14's executor makes of a kubernetes-family node record.

Runs inside a virtualenv with zuul==14.3.0 (not ours), as a subprocess of
the kubernetes driver tests.  Reads a node record (JSON, as stored in
ZooKeeper) on stdin, loads it into Zuul's own ``Node`` model, writes the
kubeconfig Zuul's ``AnsibleJob.prepareKubeConfig`` writes for it to the
file named on the command line, and prints one JSON document with the
context, namespace and pod Zuul would use.
Usage: kubeconfig.py KUBECONFIG_PATH < record.json
"""

import json
import sys
import types

from zuul import model
from zuul.executor.server import AnsibleJob


def main() -> int:
    record = json.load(sys.stdin)
    node = model.Node(["node0"], record["type"][0])
    node.updateFromDict(record)
    data = node.connection_port
    jobdir = types.SimpleNamespace(kubeconfig=sys.argv[1])
    # prepareKubeConfig uses nothing of the job but the job directory.
    AnsibleJob.prepareKubeConfig(None, jobdir, data)
    print(json.dumps({"context": data["context_name"], "namespace": data["namespace"],
                      "pod": data.get("pod"), "connection_type": node.connection_type,
                      "ansible_host": node.interface_ip}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
