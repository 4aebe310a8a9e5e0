"""fkvideo_detector: the video face detection daemon: decode, motion, detect, track, post."""
