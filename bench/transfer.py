"""File transfer scenario: one uploader sends a file of SIZE bytes into a room of N recipients (chatd only).

Protocol (chatd docs/PROTOCOL.md, "File transfer"): tagged connections (`/client`), `/send SIZE NAME` ->
`24 ID SIZE NAME`; frames `/data ID LEN` CRLF + LEN raw bytes (LEN <= 65536); `/done ID SHA256` -> `26 ID ...`.
Then every other tagged member gets `20 ID SIZE SHA256 SENDER NAME`, `21 ID BASE64` lines, `22 ID`.

Processes: the uploader runs in this process; the recipients run in a forked child (epoll, counting bytes and
looking for the end line), except one that a second child checks completely (base64 decode, size, SHA-256).
Reported: upload seconds, each recipient's throughput (file bytes / seconds from its `20` line to its `22`
line), the server's peak RSS growth (VmHWM, relative to VmRSS before the upload), and CPU on both sides.
"""
import base64
import hashlib
import json
import os
import select
import signal
import socket
import time

from bench.servers import PASSWORD

BLOCK = 65536


class TransferError(Exception):
    pass


def block(i, base):
    return i.to_bytes(8, "big") + base[8:]


def expected_sha(size, base):
    h = hashlib.sha256()
    n, i = 0, 0
    while n < size:
        b = block(i, base)[:size - n]
        h.update(b)
        n += len(b)
        i += 1
    return h.hexdigest()


def proc_status(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_cpu(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return float("nan")


def expect(sock, needle, deadline, buf=b""):
    """Read until `needle` is in the data; return (data up to and including the line with it, rest)."""
    while needle not in buf or b"\n" not in buf[buf.index(needle) + len(needle):]:
        if time.time() > deadline:
            raise TransferError("timed out waiting for %r; got %r" % (needle, buf[-300:]))
        sock.settimeout(max(0.05, deadline - time.time()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        if not data:
            raise TransferError("server closed the connection waiting for %r; got %r" % (needle, buf[-300:]))
        buf += data
        for bad in (b"\n02 ", b"\n25 "):
            if bad in b"\n" + buf and needle not in buf:
                j = (b"\n" + buf).index(bad)
                raise TransferError("server refused: %r" % (b"\n" + buf)[j:j + 200].strip())
    j = buf.index(needle)
    k = buf.index(b"\n", j + len(needle)) + 1
    return buf[:k], buf[k:]


def connect(port, name, room, deadline):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(b"/client bench 1.0\r\n")
    _, rest = expect(s, b"Tagged mode on", deadline)
    s.sendall(b"login %s\r\n" % name.encode())
    _, rest = expect(s, b"Password:", deadline, rest)
    s.sendall(PASSWORD.encode() + b"\r\n")
    _, rest = expect(s, b"Logged in as", deadline, rest)
    s.sendall(b"join %s\r\n" % room.encode())
    _, rest = expect(s, b"Entered room", deadline, rest)
    return s, rest


def bulk_recipients(socks, rests, deadline):
    """Count bytes until each socket has sent its `22 ID` line; times from its `20` line to `22`."""
    n = len(socks)
    ep = select.epoll()
    fd2i = {}
    for i, s in enumerate(socks):
        s.setblocking(False)
        ep.register(s.fileno(), select.EPOLLIN)
        fd2i[s.fileno()] = i
    start, end, nbytes, tail = [0.0] * n, [0.0] * n, [0] * n, list(rests)
    fid = [None] * n
    buf = bytearray(1 << 20)
    left = n
    while left and time.time() < deadline:
        for fd, _ in ep.poll(0.5):
            i = fd2i[fd]
            try:
                m = socks[i].recv_into(buf)
            except BlockingIOError:
                continue
            if m == 0:
                raise TransferError("recipient %d: server closed the connection" % i)
            now = time.time()
            nbytes[i] += m
            chunk = tail[i] + bytes(buf[:m]) if len(tail[i]) < 4096 else tail[i][-4096:] + bytes(buf[:m])
            if fid[i] is None:
                j = (b"\n" + chunk).find(b"\n20 ")
                if j < 0:
                    tail[i] = chunk[-4096:]
                    continue
                line_end = chunk.find(b"\n", j)
                if line_end < 0:
                    tail[i] = chunk
                    continue
                fid[i] = chunk[j:line_end].split()[1]
                start[i] = now
            if b"\n23 " + fid[i] + b" " in chunk:
                raise TransferError("recipient %d: transfer aborted: %r" % (i, chunk[chunk.index(b"\n23 "):][:200]))
            if b"\n22 " + fid[i] + b"\r" in chunk or b"\n22 " + fid[i] + b"\n" in chunk:
                end[i] = now
                ep.unregister(fd)
                left -= 1
            tail[i] = chunk[-64:]
    ep.close()
    if left:
        raise TransferError("%d of %d recipients did not get the whole file in time" % (left, n))
    return dict(start=start, end=end, wire_bytes=nbytes)


def check_recipient(sock, rest, size, sha, deadline):
    """Parse every line: decode the base64 pieces, check size and SHA-256."""
    h = hashlib.sha256()
    got, buf, fid, t0 = 0, rest, None, 0.0
    sock.settimeout(1.0)
    while time.time() < deadline:
        lines = buf.split(b"\r\n")
        buf = lines.pop()
        for ln in lines:
            if ln.startswith(b"20 ") and fid is None:
                fid, t0 = ln.split()[1], time.time()
            elif fid is not None and ln.startswith(b"21 " + fid + b" "):
                piece = base64.b64decode(ln[4 + len(fid):])
                h.update(piece)
                got += len(piece)
            elif fid is not None and ln == b"22 " + fid:
                t1 = time.time()
                if got != size or h.hexdigest() != sha:
                    raise TransferError("checked recipient: %d of %d bytes, sha256 %s (want %s)" % (
                        got, size, h.hexdigest(), sha))
                return dict(checked_bytes=got, checked_seconds=t1 - t0, sha_ok=True)
            elif fid is not None and ln.startswith(b"23 " + fid):
                raise TransferError("checked recipient: transfer aborted: %r" % ln[:200])
        try:
            data = sock.recv(1 << 20)
        except socket.timeout:
            continue
        if not data:
            raise TransferError("checked recipient: server closed the connection")
        buf += data
    raise TransferError("checked recipient: timed out after %d of %d bytes" % (got, size))


def fork_child(work):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            signal.alarm(900)
            c0 = time.process_time()
            out = work()
            out["cpu"] = time.process_time() - c0
        except BaseException as e:  # report everything to the parent
            out = {"error": "%s: %s" % (type(e).__name__, e)}
        data = json.dumps(out).encode()
        while data:
            data = data[os.write(w, data):]
        os._exit(0)
    os.close(w)
    return pid, r


def collect(pid, r, deadline):
    data = b""
    while True:
        rl, _, _ = select.select([r], [], [], max(0.0, deadline - time.time()))
        if not rl:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TransferError("a recipient process did not report in time")
        chunk = os.read(r, 1 << 20)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    out = json.loads(data or b"{}")
    if "error" in out:
        raise TransferError(out["error"])
    return out


def run(port, server_pid, size, recipients, room="files", timeout=600.0):
    deadline = time.time() + timeout
    base = os.urandom(BLOCK)
    sha = expected_sha(size, base)
    names = ["f%d" % i for i in range(recipients + 1)]
    conns = [connect(port, n, room, deadline) for n in names]
    up, up_rest = conns[0]
    rec = conns[1:]
    rss0 = proc_status(server_pid, "VmRSS")
    cpu0 = proc_cpu(server_pid)
    checked_pid, checked_r = fork_child(lambda: check_recipient(rec[0][0], rec[0][1], size, sha, deadline))
    bulk_pid, bulk_r = fork_child(lambda: bulk_recipients([s for s, _ in rec[1:]], [r for _, r in rec[1:]], deadline))
    for s, _ in rec:
        s.close()
    try:
        t_up0 = time.time()
        up.sendall(b"/send %d bench.bin\r\n" % size)
        line, up_rest = expect(up, b"\n24 ", deadline, b"\n" + up_rest)
        fid = line[line.index(b"\n24 ") + 4:].split()[0]
        up.settimeout(max(1.0, deadline - time.time()))
        sent, i = 0, 0
        while sent < size:
            b = block(i, base)[:size - sent]
            up.sendall(b"/data %s %d\r\n" % (fid, len(b)) + b)
            sent += len(b)
            i += 1
        up.sendall(b"/done %s %s\r\n" % (fid, sha.encode()))
        _, up_rest = expect(up, b"\n26 " + fid, deadline, b"\n" + up_rest)
        t_up1 = time.time()
        peak_upload = proc_status(server_pid, "VmHWM")
        checked = collect(checked_pid, checked_r, deadline)
        bulk = collect(bulk_pid, bulk_r, deadline)
        t_end = time.time()
    except BaseException:
        for p in (checked_pid, bulk_pid):
            try:
                os.kill(p, signal.SIGKILL)
                os.waitpid(p, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        raise
    finally:
        up.close()
    hwm = proc_status(server_pid, "VmHWM")
    cpu1 = proc_cpu(server_pid)
    per = [size / max(1e-9, e - s) / 1e6 for s, e in zip(bulk["start"], bulk["end"])]
    per.append(size / max(1e-9, checked["checked_seconds"]) / 1e6)
    download_s = max(bulk["end"] + [t_end]) - t_up1 if False else max(bulk["end"]) - t_up1
    return dict(file_bytes=size, recipients=recipients, upload_seconds=t_up1 - t_up0,
                upload_mb_per_s=size / max(1e-9, t_up1 - t_up0) / 1e6, download_seconds=download_s,
                mb_per_s_per_recipient=sorted(per)[len(per) // 2], mb_per_s_min=min(per), mb_per_s_all=per,
                sha_ok=checked["sha_ok"], rss_before_kib=rss0, peak_rss_kib=hwm, peak_rss_upload_kib=peak_upload,
                peak_rss_growth_mib=(hwm - rss0) / 1024, server_cpu_s=cpu1 - cpu0,
                gen_cpu_s=checked.get("cpu", 0) + bulk.get("cpu", 0), total_seconds=t_end - t_up0)
