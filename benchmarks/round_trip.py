"""What a wake-up costs on this machine: a round trip between two processes against one between two threads.

Process mode's floor at concurrency 1 is one round trip between the server and its worker process per
request; thread mode's is one between the HTTP thread and a worker thread. This measures both bare:
`--count` round trips of a small message over a Unix socket pair between two processes (each side
waiting in epoll, as the server's loop and a worker process do), and over two locks between two
threads (as a request queue hands work to a worker thread), each after `--idle-us` of busy waiting
on the sending side, so the other side's core has gone idle as it does between requests at c=1
(0: back to back). Prints the median round trip of each, `--rounds` times.

Usage: python benchmarks/round_trip.py [--count 2000] [--idle-us 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import threading
import time


def busy_wait(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def between_processes(count: int, idle_s: float) -> float:
    """Median round trip (µs) of an 80-byte message to a forked process and back, both sides in epoll."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # the echoing side: exits when the socket ends
        ours.close()
        poller = select.epoll()
        poller.register(theirs.fileno(), select.EPOLLIN)
        while True:
            poller.poll()
            data = theirs.recv(1024)
            if not data:
                os._exit(0)
            theirs.sendall(data)
    theirs.close()
    poller = select.epoll()
    poller.register(ours.fileno(), select.EPOLLIN)
    times = []
    for _ in range(count):
        busy_wait(idle_s)
        start = time.perf_counter()
        ours.sendall(b"x" * 80)
        poller.poll()
        ours.recv(1024)
        times.append(time.perf_counter() - start)
    ours.close()
    os.waitpid(pid, 0)
    return statistics.median(times) * 1e6


def between_threads(count: int, idle_s: float) -> float:
    """Median round trip (µs) of a hand-over to another thread and back, through two locks."""
    there, back = threading.Lock(), threading.Lock()
    there.acquire()
    back.acquire()
    stop = False

    def echo() -> None:
        while True:
            there.acquire()
            if stop:
                return
            back.release()

    thread = threading.Thread(target=echo)
    thread.start()
    times = []
    for _ in range(count):
        busy_wait(idle_s)
        start = time.perf_counter()
        there.release()
        back.acquire()
        times.append(time.perf_counter() - start)
    stop = True
    there.release()
    thread.join(10)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--idle-us", type=float, default=300.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    idle_s = args.idle_us / 1e6
    for _ in range(args.rounds):
        processes, threads = between_processes(args.count, idle_s), between_threads(args.count, idle_s)
        print(f"idle {args.idle_us:.0f} us: processes {processes:.1f} us, threads {threads:.1f} us per round trip")


if __name__ == "__main__":
    main()
