"""Project exceptions.  Messages tell the operator what to do next."""


class NodepoolError(Exception):
    """Base class for nodepool errors."""


class ConfigError(NodepoolError):
    """The configuration is invalid; the message names file, place and fix."""


class DriverNotFound(ConfigError):
    """A provider names a driver that is not installed."""


class ProviderNotImplemented(ConfigError):
    """A provider uses a driver whose configuration this build understands
    but which cannot launch nodes or take uploads yet (``Driver.config_only``).
    The daemons leave such a provider out and serve the others;
    ``config-validate`` accepts it with a warning."""

    def __init__(self, provider_name: str, driver_name: str) -> None:
        self.provider_name = provider_name
        self.driver_name = driver_name
        super().__init__(
            f"provider {provider_name!r} uses driver {driver_name!r}: its configuration is "
            "understood, but launching nodes with it is not implemented in this build yet; "
            "this provider is left out (no nodes are launched and no images uploaded for it; "
            "see 'Drivers understood but not served yet' in the documentation)")


class LaunchError(NodepoolError):
    """A node could not be launched.

    ``statsd_key`` is the ``<result>`` of the ``nodepool.launch.*``
    metrics a failed attempt is counted under (see
    :func:`nodepool.stats.launch_result_key`); the keys are upstream's
    exception kinds, which existing dashboards read.
    """

    statsd_key = "error.unknown"


class QuotaException(LaunchError):
    """The cloud refused for lack of quota: the request waits, never fails."""

    statsd_key = "error.quota"


class CapacityException(QuotaException):
    """The cloud has no capacity for this instance type right now (AWS's
    ``InsufficientInstanceCapacity``): like a quota refusal, the request
    waits and the node is launched again later; counted apart."""

    statsd_key = "error.capacity"


class LaunchNodepoolException(LaunchError):
    """Nodepool itself could not start the launch (for example no image
    upload to boot from)."""

    statsd_key = "error.nodepool"


class LaunchStatusException(LaunchError):
    """The server went to an error state."""

    statsd_key = "error.status"


class LaunchNetworkException(LaunchError):
    """The server's network (e.g. its floating IP) could not be set up."""

    statsd_key = "error.network"


class LaunchKeyscanException(LaunchError):
    """The node never answered on its SSH port within boot-timeout."""

    statsd_key = "error.keyscan"


class ServerCreateTimeout(LaunchError):
    """The server did not become active within launch-timeout."""

    statsd_key = "error.servercreatetimeout"


class ServerDeleteTimeout(LaunchError):
    statsd_key = "error.serverdeletetimeout"


class ImageNotAvailable(LaunchNodepoolException):
    """There is no image to boot the label from (no ready upload of its
    diskimage, or its cloud image is not in the cloud).  Upstream counts
    this as ``error.nodepool``; its ``error.imagetimeout`` is declared but
    never sent."""


class RuntimeConfigurationException(NodepoolError):
    """A label can never be served by this provider as configured (e.g. no
    flavor matches): requests for it are declined."""


class ProviderStopped(NodepoolError):
    """The provider was stopped while an operation was under way."""


class NotFound(NodepoolError):
    """A cloud resource is already gone (a delete is then a success)."""


class BuilderError(NodepoolError):
    """An image build or upload failed."""
