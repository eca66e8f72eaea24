"""The ceiling of loopback TCP on this machine, for reading the file transfer figures.

    python -m bench.loopback [--mib 1024] [--sockets 10]

One process writes 64 KiB blocks to ``--sockets`` connections as fast as they take them; a second process
reads and discards. No encoding, hashing or disk: what chatd's transfer could reach at best here.
Loopback only; bounded by size and by a 120 s limit.
"""
import argparse
import os
import select
import socket
import time

LIMIT_SECONDS = 120.0


def reader(port: int, sockets: int, total: int) -> None:
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(sockets)]
    poll = select.epoll()
    left = {}
    for c in conns:
        c.setblocking(False)
        poll.register(c.fileno(), select.EPOLLIN)
        left[c.fileno()] = total
    buf = bytearray(1 << 18)
    deadline = time.monotonic() + LIMIT_SECONDS
    while left and time.monotonic() < deadline:
        for fd, _ in poll.poll(1):
            try:
                n = os.readv(fd, [buf])
            except BlockingIOError:
                continue
            left[fd] -= n
            if n == 0 or left[fd] <= 0:
                del left[fd]
                poll.unregister(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024, help="MiB per socket (default 1024)")
    ap.add_argument("--sockets", type=int, default=10)
    args = ap.parse_args()
    total = args.mib << 20
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(args.sockets)
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        try:
            reader(port, args.sockets, total)
        finally:
            os._exit(0)
    conns = {}
    for _ in range(args.sockets):
        c = listener.accept()[0]
        c.setblocking(False)
        conns[c.fileno()] = c
    block = b"x" * 65536
    sent = dict.fromkeys(conns, 0)
    poll = select.epoll()
    for fd in conns:
        poll.register(fd, select.EPOLLOUT)
    start, before = time.perf_counter(), os.times()
    deadline = time.monotonic() + LIMIT_SECONDS
    while sent and time.monotonic() < deadline:
        for fd, _ in poll.poll(1):
            try:
                sent[fd] += conns[fd].send(block)
            except BlockingIOError:
                continue
            if sent[fd] >= total:
                poll.unregister(fd)
                del sent[fd]
    os.waitpid(pid, 0)
    seconds, after = time.perf_counter() - start, os.times()
    mine = after.user - before.user + after.system - before.system
    child = after.children_user - before.children_user + after.children_system - before.children_system
    print(f"{args.sockets} sockets x {args.mib} MiB in {seconds:.2f} s: {total / seconds / 1e6:.0f} MB/s per socket, "
          f"{args.sockets * total / seconds / 1e9:.2f} GB/s in total; writer CPU {mine:.2f} s, reader CPU {child:.2f} s")


if __name__ == "__main__":
    main()
