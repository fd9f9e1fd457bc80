"""Hostile traffic is shed, not absorbed (issue 12): one source flooding INVITEs it never ACKs
must not turn the trunk's callers away, and torture messages or a scanner must not disturb a call
in progress.  SIPp, sipvicious and raw RFC 4475 messages on one side, a real node on the other."""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.node_harness import RunningNode, start_node
from tests.sipp_driver import SippResult, run_sipp

pytestmark = pytest.mark.sip

TRUNK = "127.0.0.1"
ATTACKER = "127.0.0.2"
TORTURER = "127.0.0.4"   # its own source: not the flooder, whom the rate limit may still ignore
ACK_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    n = start_node(tmp_path_factory.mktemp("edge-flood"), workers=3,
                   env={"HANDOFF_TRUNK_SOURCES": TRUNK, "HANDOFF_ANSWER_DELAY_S": "0",
                        "HANDOFF_ACK_TIMEOUT_S": str(ACK_TIMEOUT_S)})
    yield n
    assert n.stop() == 0, n.log_path.read_text()[-3000:]


def message_counts(r: SippResult) -> dict[str, int]:
    """SIPp's final screen, per scenario line: message -> how many were sent or received."""
    out: dict[str, int] = {}
    for m in re.finditer(r"^\s+(\w+)\s+(?:<-+|-+>)\s+(?:E-RTD\d\s+)?(\d+)", r.stdout, re.M):
        out.setdefault(m.group(1), int(m.group(2)))
    return out


def test_an_invite_flood_from_one_source_leaves_the_trunk_its_calls(node: RunningNode) -> None:
    results: dict[str, SippResult] = {}

    def flood() -> None:
        results["flood"] = run_sipp("uac_flood_no_ack.xml", node.sip_port, local_ip=ATTACKER, service="122",
                                    calls=1500, rate=150, concurrency=1000, timeout=60, extra=("-nd", "-nr", "-recv_timeout", "4000"))

    attacker = threading.Thread(target=flood)
    t0 = time.time()
    attacker.start()
    # the flood is on: the attacker already holds what it can
    node.wait_for(lambda: any(c["caller"] == "666" for c in node.calls(20)), timeout=20, every=0.1)
    trunk = run_sipp("uac_122_dtmf.xml", node.sip_port, local_ip=TRUNK, service="122", calls=12, rate=1.5,
                     concurrency=6, first="500", stay="1000", digits="", timeout=60)
    attacker.join(120)
    flood_r = results["flood"]
    counts = message_counts(flood_r)
    offered = counts.get("INVITE", 0)
    answered = counts.get("200", 0)
    refused = counts.get("503", 0)
    ignored = offered - answered - refused  # no final answer at all: dropped by the per-source rate limit
    print(f"\nattacker {ATTACKER}: offered {offered}, answered {answered} (never ACKed), refused {refused} (503), "
          f"ignored {ignored}")
    print(f"trunk    {TRUNK}: offered 12, completed {trunk.successful}, refused {trunk.failed}")
    print(f"flood lasted {time.time() - t0:.1f} s")
    assert offered >= 1000, flood_r.stdout[-2000:]
    assert trunk.ok and trunk.successful == 12, trunk.stdout + trunk.log
    # The attacker's answered calls held their slots for seconds, not PJSIP's 32 s.
    flooded = [c for c in node.calls(200) if c["caller"] == "666"]
    assert flooded and all(c.get("ended_at") for c in flooded)
    held = [c["ended_at"] - c["started_at"] for c in flooded]
    assert max(held) < ACK_TIMEOUT_S + 3, held
    assert "caller_never_acked" in node.log_path.read_text()


# --------------------------------------------------------------------------------------------
# RFC 4475 torture messages and a sipvicious scan while a call is in progress
# --------------------------------------------------------------------------------------------
# The messages of RFC 4475 that a front door meets first, as the RFC writes them, with one change:
# every host is a loopback address ({FRONT} the node, {SRC} the sender), so nothing can leave the
# machine whatever the front door did with them.
TORTURE = {
    "3.1.1.1 wsinv": (
        "INVITE sip:vivekg@{FRONT};unknownparam SIP/2.0\r\n"
        "TO :\r\n sip:vivekg@{FRONT} ;   tag    = 1918181833n\r\n"
        'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@{SRC}>\r\n  ;\r\n  tag = 98asjd8\r\n'
        "MaX-fOrWaRdS: 0068\r\n"
        "Call-ID: wsinv.ndaksdj@{SRC}\r\n"
        "Content-Length   : 150\r\n"
        "cseq: 0009\r\n  INVITE\r\n"
        "Via  : SIP  /   2.0\r\n /UDP\r\n    {SRC};branch=390skdjuw\r\n"
        "s :\r\n"
        "NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n"
        "UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n"
        "Content-Type: application/sdp\r\n"
        "Route:\r\n <sip:{FRONT};lr;unknownwith=value;unknown-no-value>\r\n"
        "v:  SIP  / 2.0  / TCP     {SRC}   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n"
        " SIP  /    2.0   / UDP  {SRC}   ; branch=\r\n z9hG4bK30239\r\n"
        'm:"Quoted string \\"\\"" <sip:jdrosen@{SRC}> ; newparam =\r\n      newvalue ;\r\n'
        "  secondparam ; q = 0.33\r\n\r\n"
        "v=0\r\no=mhandley 29739 7272939 IN IP4 {SRC}\r\ns=-\r\nc=IN IP4 {SRC}\r\nt=0 0\r\n"
        "m=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n"),
    "3.1.1.2 intmeth": (
        "!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
        ":&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@{FRONT} SIP/2.0\r\n"
        "Via: SIP/2.0/TCP {SRC};branch=z9hG4bK-.!%66*_+`'~\r\n"
        'To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:1_unusual.URI~(to-be!sure)&isn\'t+it$/crazy?,/;;*@{FRONT}>\r\n'
        "From: token1~` token2'+_ token3*%!.- <sip:mundane@{SRC}>;fromParam''~+*_!.-%="
        '"\xd1\x80\xd0\xb0\xd0\xb1\xd0\xbe\xd1\x82\xd0\xb0\xd1\x8e\xd1\x89\xd0\xb8\xd0\xb9";tag=_token~1\'+`*%!-.\r\n'
        "Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{\r\n"
        "CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~\r\n"
        "Max-Forwards: 255\r\n"
        "extensionHeader-!.%*+_`'~:\xef\xbb\xbf\xe5\xa4\xa7\xe5\x81\x9c\xe9\x9b\xbb\r\n"
        "Content-Length: 0\r\n\r\n"),
    "3.1.1.3 esc01": (
        "INVITE sip:sips%3Auser%40example.com@{FRONT} SIP/2.0\r\n"
        "To: sip:%75se%72@{FRONT}\r\n"
        "From: <sip:I%20have%20spaces@{SRC}>;tag=938\r\n"
        "Max-Forwards: 87\r\n"
        "i: esc01.239409asdfakjkn23onasd0-3234\r\n"
        "CSeq: 234234 INVITE\r\n"
        "Via: SIP/2.0/UDP {SRC};branch=z9hG4bKkdjuw\r\n"
        "C: application/sdp\r\n"
        "Contact:\r\n  <sip:cal%6Cer@{SRC};%6C%72;n%61me=v%61lue%25%34%31>\r\n"
        "Content-Length: 0\r\n\r\n"),
    "3.1.1.4 escnull": (
        "REGISTER sip:{FRONT} SIP/2.0\r\n"
        "To: sip:null-%00-null@{FRONT}\r\n"
        "From: sip:null-%00-null@{SRC};tag=839923423\r\n"
        "Max-Forwards: 70\r\n"
        "Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd\r\n"
        "CSeq: 14398234 REGISTER\r\n"
        "Via: SIP/2.0/UDP {SRC};branch=z9hG4bKkdjuw\r\n"
        "Contact: <sip:%00@{SRC}>\r\n"
        "L:0\r\n\r\n"),
    "3.1.1.11 longreq (long values)": (
        "INVITE sip:122@{FRONT} SIP/2.0\r\n"
        "To: \"I have a user name of " + "extreme" * 60 + " proportion\"<sip:122@{FRONT}:6000;unknownparam1="
        + "very" * 50 + "longvalue;longparam" + "name" * 40 + "=shortvalue>\r\n"
        "From: sip:" + "amazinglylongcallername" * 20 + "@{SRC};tag=12" + "982" * 100 + "424\r\n"
        "Call-ID: longreq." + "onereallyreallyreallyreallylongcallid" * 40 + "\r\n"
        "CSeq: 3882340 INVITE\r\n"
        + "".join(f"Via: SIP/2.0/UDP {{SRC}};branch=z9hG4bK{i}-{'x' * 200}\r\n" for i in range(30))
        + "Max-Forwards: 70\r\n"
        "Contact: <sip:" + "amazinglylongcallername" * 20 + "@{SRC}>\r\n"
        "Content-Length: 0\r\n\r\n"),
    "3.1.2.1 badinv01": (
        "INVITE sip:user@{FRONT} SIP/2.0\r\n"
        "To: sip:j.user@{FRONT}\r\n"
        "From: sip:caller@{SRC};tag=134161461246\r\n"
        "Max-Forwards: 7\r\n"
        "Call-ID: badinv01.0ha0isndaksdjasdf3234nas\r\n"
        "CSeq: 8 INVITE\r\n"
        "Via: SIP/2.0/UDP {SRC};;,;,,\r\n"
        "Contact: \"Joe\" <sip:joe@{SRC}>;;;;\r\n"
        "Content-Length: 152\r\n"
        "Content-Type: application/sdp\r\n\r\n"
        "v=0\r\no=- 933 933 IN IP4 {SRC}\r\ns=-\r\nc=IN IP4 {SRC}\r\nt=0 0\r\nm=audio 3456 RTP/AVP 0\r\n"),
    "3.1.2.2 clerr": (
        "INVITE sip:122@{FRONT} SIP/2.0\r\n"
        "Max-Forwards: 80\r\n"
        "To: sip:j.user@{FRONT}\r\n"
        "From: sip:caller@{SRC};tag=93942939o2\r\n"
        "Contact: <sip:caller@{SRC}>\r\n"
        "Call-ID: clerr.0ha0isndaksdjweiafasdk3\r\n"
        "CSeq: 8 INVITE\r\n"
        "Via: SIP/2.0/UDP {SRC};branch=z9hG4bK-39234-23523\r\n"
        "Content-Type: application/sdp\r\n"
        "Content-Length: 9999\r\n\r\n"
        "v=0\r\no=mhandley 29739 7272939 IN IP4 {SRC}\r\ns=-\r\nc=IN IP4 {SRC}\r\nt=0 0\r\n"),
    "3.1.2.3 ncl": (
        "INVITE sip:122@{FRONT} SIP/2.0\r\n"
        "Max-Forwards: 254\r\n"
        "To: sip:j.user@{FRONT}\r\n"
        "From: sip:caller@{SRC};tag=32394234\r\n"
        "Call-ID: ncl.0ha0isndaksdj2193423r542w35\r\n"
        "CSeq: 0 INVITE\r\n"
        "Via: SIP/2.0/UDP {SRC};branch=z9hG4bKkdjuw\r\n"
        "Contact: <sip:caller@{SRC}>\r\n"
        "Content-Type: application/sdp\r\n"
        "Content-Length: -999\r\n\r\n"
        "v=0\r\no=mhandley 29739 7272939 IN IP4 {SRC}\r\ns=-\r\n"),
    "3.1.2.4 scalar02 (overlarge values)": (
        "REGISTER sip:{FRONT} SIP/2.0\r\n"
        "Via: SIP/2.0/TCP {SRC};branch=z9hG4bKsxlglg\r\n"
        "Max-Forwards: 300\r\n"
        "From: sip:user@{SRC};tag=88sja8x\r\n"
        "To: sip:user@{FRONT}\r\n"
        "Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32\r\n"
        "CSeq: 36893488147419103232 REGISTER\r\n"
        "Contact: <sip:user@{SRC}>;expires=280297596632815\r\n"
        "Expires: 1293876498765\r\n"
        "Content-Length: 0\r\n\r\n"),
    "3.1.2.6 quotbal (unterminated quote)": (
        "INVITE sip:122@{FRONT} SIP/2.0\r\n"
        "To: \"Mr. J. User <sip:j.user@{FRONT}>\r\n"
        "From: sip:caller@{SRC};tag=93334\r\n"
        "Max-Forwards: 10\r\n"
        "Call-ID: quotbal.aksdj\r\n"
        "Contact: <sip:caller@{SRC}:5060>\r\n"
        "CSeq: 8 INVITE\r\n"
        "Via: SIP/2.0/UDP {SRC};branch=z9hG4bKkdjuw39234\r\n"
        "Content-Length: 0\r\n\r\n"),
    "3.1.2.7 ltgtruri": (
        "INVITE <sip:122@{FRONT}> SIP/2.0\r\n"
        "To: sip:122@{FRONT}\r\n"
        "From: sip:caller@{SRC};tag=39291\r\n"
        "Max-Forwards: 23\r\n"
        "Call-ID: ltgtruri.1@{SRC}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Via: SIP/2.0/UDP {SRC};branch=z9hG4bK-ltgt\r\n"
        "Contact: <sip:caller@{SRC}>\r\n"
        "Content-Length: 0\r\n\r\n"),
    "3.1.2.8 lwsruri": (
        "INVITE sip:122@{FRONT}; lr SIP/2.0\r\n"
        "To: sip:122@{FRONT};tag=3xfe-9921883-z9f\r\n"
        "From: sip:caller@{SRC};tag=231413434\r\n"
        "Max-Forwards: 5\r\n"
        "Call-ID: lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423\r\n"
        "CSeq: 2130706432 INVITE\r\n"
        "Via: SIP/2.0/UDP {SRC};branch=z9hG4bKkdjuw2395\r\n"
        "Contact: <sip:caller@{SRC}>\r\n"
        "Content-Length: 0\r\n\r\n"),
    "3.1.2.9 lwsstart": (
        "INVITE  sip:122@{FRONT}  SIP/2.0\r\n"
        "Max-Forwards: 8\r\n"
        "To: sip:122@{FRONT}\r\n"
        "From: sip:caller@{SRC};tag=8814\r\n"
        "Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@{SRC}\r\n"
        "CSeq: 1893884 INVITE\r\n"
        "Via: SIP/2.0/UDP {SRC};branch=z9hG4bKkdjuw3923\r\n"
        "Contact: <sip:caller@{SRC}>\r\n"
        "Content-Length: 0\r\n\r\n"),
    "3.1.2.12 mismatch01": (
        "OPTIONS sip:122@{FRONT} SIP/2.0\r\n"
        "To: sip:122@{FRONT}\r\n"
        "From: sip:caller@{SRC};tag=34525\r\n"
        "Max-Forwards: 6\r\n"
        "Call-ID: mismatch01.dj0234sxdfl3\r\n"
        "CSeq: 8 INVITE\r\n"
        "Via: SIP/2.0/UDP {SRC};branch=z9hG4bKkdjuw\r\n"
        "Content-Length: 0\r\n\r\n"),
    "3.1.2.16 badvers": (
        "OPTIONS sip:t.watson@{FRONT} SIP/7.0\r\n"
        "Via:     SIP/7.0/UDP {SRC};branch=z9hG4bKkdjuw\r\n"
        "Max-Forwards:     70\r\n"
        "To:     <sip:t.watson@{FRONT}>\r\n"
        "From:   A. Bell <sip:a.g.bell@{SRC}>;tag=qweoiqpe\r\n"
        "Call-ID: badvers.31417@{SRC}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "l: 0\r\n\r\n"),
    "3.1.2.17 insuf (no Call-ID, From, To)": (
        "INVITE sip:122@{FRONT} SIP/2.0\r\n"
        "CSeq: 193942 INVITE\r\n"
        "Via: SIP/2.0/UDP {SRC};branch=z9hG4bKkdjuw\r\n"
        "Content-Length: 0\r\n\r\n"),
    "3.1.2.14 bigcode (a response)": (
        "SIP/2.0 4294967301 better not break the receiver\r\n"
        "Via: SIP/2.0/UDP {SRC};branch=z9hG4bK342sdfoi3\r\n"
        "To: <sip:user@{FRONT}>;tag=2229\r\n"
        "From: <sip:user@{SRC}>;tag=88sja8x\r\n"
        "Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i\r\n"
        "CSeq: 353494 INVITE\r\n"
        "Content-Length: 0\r\n\r\n"),
}


def kamailio_pids(node: RunningNode) -> set[int]:
    """The front door's processes: the node's kamailio child and every process it forked."""
    parents = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
                parents[int(p.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), stat.split("(", 1)[1].rsplit(")", 1)[0])
            except (OSError, ValueError, IndexError):
                continue
    main = {pid for pid, (ppid, comm) in parents.items() if ppid == node.proc.pid and comm == "kamailio"}
    return main | {pid for pid, (ppid, _) in parents.items() if ppid in main}


def test_torture_messages_and_a_scan_while_a_call_is_in_progress(node: RunningNode, tmp_path: Path) -> None:
    workers = node.worker_pids()
    front = kamailio_pids(node)
    assert front and workers
    results: dict[str, SippResult] = {}
    t0 = time.time()
    call = threading.Thread(target=lambda: results.setdefault("call", run_sipp(
        "uac_122_dtmf.xml", node.sip_port, service="122", first="500", stay="12000", digits="", timeout=60)))
    call.start()
    node.wait_for(lambda: [c for c in node.calls(5) if c["started_at"] >= t0 - 1 and not c.get("ended_at")],
                  timeout=20, every=0.1)

    # RFC 4475, over UDP from a stranger, and the long ones over TCP too
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((TORTURER, 0))
    udp.settimeout(0.5)
    fill = {"FRONT": f"127.0.0.1:{node.sip_port}", "SRC": f"{TORTURER}:{udp.getsockname()[1]}"}
    answers = {}
    for name, text in TORTURE.items():
        msg = text
        for k, v in fill.items():
            msg = msg.replace("{" + k + "}", v)
        udp.sendto(msg.encode("latin-1"), ("127.0.0.1", node.sip_port))  # the RFC's bytes, as written
        try:
            answers[name] = udp.recv(65535).split(b"\r\n", 1)[0].decode(errors="replace")
        except TimeoutError:
            answers[name] = "(dropped)"
    for name in ("3.1.1.11 longreq (long values)", "3.1.2.2 clerr"):
        with socket.create_connection(("127.0.0.1", node.sip_port), timeout=5, source_address=(TORTURER, 0)) as tcp:
            tcp.sendall(TORTURE[name].replace("{FRONT}", fill["FRONT"]).replace("{SRC}", TORTURER).encode("latin-1"))
    udp.close()
    print("\n" + "\n".join(f"  {k:40} {v}" for k, v in answers.items()))
    # the front door read them (not a silent rate-limit drop): many got a final answer (sanity
    # drops the worst without one), none a 2xx
    assert sum(v.startswith("SIP/2.0 4") for v in answers.values()) >= 5, answers
    assert not any(v.startswith("SIP/2.0 2") for v in answers.values()), answers

    # sipvicious: a map scan and an extension war-dial, as a scanner would run them
    scans = []
    for tool, args in (("svmap", ["127.0.0.1", "-p", str(node.sip_port)]),
                       ("svwar", ["-e", "100-140", "-m", "INVITE", "127.0.0.1", "-p", str(node.sip_port)])):
        p = subprocess.run([tool, *args, "-b", TORTURER, "-P", str(free_port()), "-t", "0.05"],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
        scans.append(p.stdout + p.stderr)
    print("\n--- svmap ---\n" + scans[0][-800:] + "\n--- svwar ---\n" + scans[1][-800:])
    # the scanner learned nothing: its requests were dropped without a word
    assert "handoff122" not in scans[0] and str(node.sip_port) not in scans[0].split("found")[-1]
    assert not re.search(r"\|\s*1[0-4]\d\s*\|", scans[1]), scans[1]

    call.join(90)
    assert results["call"].ok, results["call"].stdout + results["call"].log
    assert node.worker_pids() == workers
    assert kamailio_pids(node) == front and all(Path(f"/proc/{p}").exists() for p in front)
    # and the front door still takes calls
    r = run_sipp("uac_122_dtmf.xml", node.sip_port, service="122", first="500", stay="500", digits="")
    assert r.ok, r.stdout + r.log
