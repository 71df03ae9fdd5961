"""The one exception type users see for bad input."""


class DagcError(ValueError):
    """Bad input: an architecture file, a graph file, an argument or a results store.

    The message is one line that names the culprit (file, block, neuron or argument);
    the command line prints it without a traceback and exits with status 2.
    """
