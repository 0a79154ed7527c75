#!/usr/bin/env python3
"""Does MSG_ZEROCOPY save the sender's copy on loopback? (docs/performance.md, 1 MiB download)

Sends 1 GiB in 1 MiB writes to a reader on 127.0.0.1, with and without
MSG_ZEROCOPY, and prints the sender thread's system time and how many
completion notifications carry SO_EE_CODE_ZEROCOPY_COPIED (the kernel copied
after all). Run: python3 bench/zerocopy_loopback.py
"""
import os
import resource
import socket
import struct
import threading
SO_ZEROCOPY, MSG_ZEROCOPY, MSG_ERRQUEUE = 60, 0x4000000, 0x2000
SO_EE_CODE_ZEROCOPY_COPIED = 1
TOTAL, CHUNK = 1 << 30, 1 << 20

def reader(sock):
    buf = bytearray(1 << 20)
    while sock.recv_into(buf):
        pass

def run(zero):
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
    c = socket.create_connection(srv.getsockname()); s, _ = srv.accept()
    t = threading.Thread(target=reader, args=(s,)); t.start()
    if zero:
        c.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
    data = memoryview(os.urandom(CHUNK))
    copied = notes = 0
    r0 = resource.getrusage(resource.RUSAGE_THREAD)
    sent = 0
    while sent < TOTAL:
        n = c.send(data, MSG_ZEROCOPY if zero else 0)
        sent += n
        if zero:
            while True:
                try:
                    _, anc, _, _ = c.recvmsg(0, 1024, MSG_ERRQUEUE | socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                for _level, _typ, payload in anc:
                    _errno, _origin, _type, code, _pad, _info, _data = struct.unpack("=IBBBBII", payload[:16])
                    notes += 1
                    copied += bool(code & SO_EE_CODE_ZEROCOPY_COPIED)
    r1 = resource.getrusage(resource.RUSAGE_THREAD)
    c.close(); t.join(); s.close(); srv.close()
    print(f"zerocopy={zero} sender system={r1.ru_stime - r0.ru_stime:.3f}s user={r1.ru_utime - r0.ru_utime:.3f}s notifications={notes} copied={copied}")

for z in (False, True, False, True):
    run(z)
