"""Project exceptions.  Messages tell the operator what to do next."""


class NodepoolError(Exception):
    """Base class for nodepool errors."""


class ConfigError(NodepoolError):
    """The configuration is invalid; the message names file, place and fix."""


class DriverNotFound(ConfigError):
    """A provider names a driver that is not installed."""


class LaunchError(NodepoolError):
    """A node could not be launched.  ``statsd_key`` names the failure in
    ``nodepool.launch.<key>`` metrics."""

    statsd_key = "error.unknown"


class QuotaException(LaunchError):
    """The cloud refused for lack of quota: the request waits, never fails."""

    statsd_key = "error.quota"


class CapacityException(LaunchError):
    statsd_key = "error.capacity"


class LaunchStatusException(LaunchError):
    """The server went to an error state."""

    statsd_key = "error.status"


class LaunchNetworkException(LaunchError):
    statsd_key = "error.network"


class LaunchKeyscanException(LaunchError):
    """The node never answered on its SSH port within boot-timeout."""

    statsd_key = "error.keyscan"


class ServerCreateTimeout(LaunchError):
    statsd_key = "error.servercreatetimeout"


class ServerDeleteTimeout(LaunchError):
    statsd_key = "error.serverdeletetimeout"


class ImageNotAvailable(LaunchError):
    statsd_key = "error.imagetimeout"


class RuntimeConfigurationException(NodepoolError):
    """A label can never be served by this provider as configured (e.g. no
    flavor matches): requests for it are declined."""


class ProviderStopped(NodepoolError):
    """The provider was stopped while an operation was under way."""


class NotFound(NodepoolError):
    """A cloud resource is already gone (a delete is then a success)."""


class BuilderError(NodepoolError):
    """An image build or upload failed."""
