"""User-facing errors: raised for bad config, data or cluster requests, printed as one line."""


class UserError(Exception):
    """A mistake the user can fix; the CLI prints `error: <message>` and exits with EXIT_USER_ERROR."""


EXIT_USER_ERROR = 2
