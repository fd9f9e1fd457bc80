"""A real pjsua2 ``AudioMediaRecorder`` writing a 440 Hz tone, optionally SIGKILLed mid-recording.

Run as a script by test_pjsua_recording.py: ``python3 pjsua_recorder.py OUT.wav SECONDS close|kill``.
It shows what the media worker really leaves behind: on close a fixed header, on a kill a header
with zero lengths and only the audio pjmedia had flushed.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pjsua2 as pj


def main(out: str, seconds: float, how: str) -> None:
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.logConfig.level = 0
    cfg.logConfig.consoleLevel = 0
    cfg.medConfig.clockRate = 8000
    cfg.medConfig.sndClockRate = 8000
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    ep.libStart()
    rec = pj.AudioMediaRecorder()
    rec.createRecorder(out)
    gen = pj.ToneGenerator()
    gen.createToneGenerator(8000, 1)
    desc = pj.ToneDesc()
    desc.freq1, desc.freq2, desc.on_msec, desc.off_msec = 440, 0, 10000, 0
    tones = pj.ToneDescVector()
    tones.append(desc)
    gen.play(tones, True)
    gen.startTransmit(rec)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ep.libHandleEvents(20)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    gen.stopTransmit(rec)
    del gen
    del rec
    ep.libDestroy()


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3])
