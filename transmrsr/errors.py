"""The one exception type the command line turns into a one-line message."""


class TransMRSRError(Exception):
    """A problem with the user's input or options, reported without a traceback.

    Library code raises this for anything a user can fix (a missing file, a 2-D image, an absurd
    factor). The command line catches it, prints ``transmrsr: error: <message>`` on stderr and
    exits with status 2. Programming errors keep their ordinary exception types so that they
    still produce a traceback.
    """


class OutputError(TransMRSRError):
    """An output could not be written: a read-only file system, a full disk, no permission.

    Raised with one line, after the partial file has been removed. A cohort stops at the first
    one: the next outputs go to the same place and would fail the same way, each after
    minutes of work.
    """


class GuideError(TransMRSRError):
    """A guide for guided restoration was refused: its registration failed, it covers too
    little of the scan's head, or it is of another head
    (:func:`transmrsr.registration.check_guide`).

    Its own type so that ``--guide-fallback`` can restore without the guide, with a warning,
    where every other error still stops the run.
    """
