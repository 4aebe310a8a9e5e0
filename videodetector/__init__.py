"""videodetector: fkvideo_detector (video face detection daemon) and its recognition backend."""

__version__ = "0.1.0"
