"""Call recordings: finalisation, integrity (SHA-256), catalog and retention.

``layout`` (where files live), ``finalize`` (repair, fsync, rename, seal; blocking), ``catalog``
(the table, own MetaData), ``closing`` (what the control process calls at call end / restart),
``integrity`` (verify), ``retention`` (purge), ``wav`` (reading and tone checks), ``cli``.
"""
