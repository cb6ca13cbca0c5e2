"""A simulated OpenStack cloud speaking real REST over HTTP on 127.0.0.1.

The OpenStack driver is tested with the real openstacksdk pointed at this
simulator through a clouds.yaml, so every request the driver makes crosses
a real socket and is parsed by openstacksdk exactly as with a real cloud:
discovery, microversions, pagination and error bodies included.  Nothing is
mocked.  Start one with::

    with SimulatedCloud() as sim:
        sim.write_clouds_yaml(path)
        conn = openstack.connect(cloud="sim", ...)

See :class:`SimulatedCloud` for the knobs that inject faults and the
methods that inspect state.
"""

from nodepool.tests.openstack_sim.cloud import SimulatedCloud
from nodepool.tests.openstack_sim.state import FloatingIP, Image, Port, Server, Volume

__all__ = ["FloatingIP", "Image", "Port", "Server", "SimulatedCloud", "Volume"]
