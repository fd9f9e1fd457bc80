"""One call's journey from answer to end, written once for every way a call arrives.

A call is answered (SIP worker or Twilio webhook), runs the IVR, waits in a skill queue, is
offered to a seat, rings it, talks, and ends.  ``journey.stages`` is the transition table,
``journey.call.CallJourney`` the driver that walks it for one call, ``journey.notifier`` the one
place a transition is logged, persisted and published, ``journey.failures`` the one mapping of a
seat leg's failure onto the ACD.  The SIP call director (``gateway.callflow``) and the Twilio
handler (``api.twilio.calls``) are the two media adapters under it.

This package sits between the domain cores and the two ingresses: it uses ``ivr`` and ``routing``
and is used by ``gateway`` and ``api``; it imports neither of them, so neither needs the other.
"""
