#!/usr/bin/env python3
"""Small real processes for the incident and activity tests. Each prints READY once it is in place.

Usage: busy.py MODE [ARG...]   (extra arguments, such as tag:... or fake secrets, are ignored)

  idle                 sleep forever (state S, no CPU, no I/O)
  burn                 spin forever, silently (state R)
  burncpu SECS         spin until this process has used SECS of CPU, then exit (prints nothing)
  write PATH           append 4 KiB to PATH every 20 ms, silently
  pair PORTFILE        listen on 127.0.0.1, start `busy.py client PORT API_KEY=...` as a child, accept its
                       connection, write the port to PORTFILE: a LISTEN and two ESTABLISHED sockets
  client PORT          connect to 127.0.0.1:PORT and hold the connection
  churn                start short-lived children (each lives ~1 ms) forever
  zombie               start a child that exits at once and never reap it
"""
import os
import signal
import socket
import subprocess
import sys
import time


def ready():
    sys.stdout.write("READY\n")
    sys.stdout.flush()


def forever():
    while True:
        signal.pause()


def main(argv):
    mode = argv[1]
    if mode == "idle":
        ready()
        forever()
    elif mode == "burn":
        ready()
        while True:
            pass
    elif mode == "burncpu":
        limit = float(argv[2])
        while time.process_time() < limit:
            pass
    elif mode == "write":
        fd = os.open(argv[2], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        ready()
        block = b"x" * 4096
        while True:
            os.write(fd, block)
            time.sleep(0.02)
    elif mode == "pair":
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        port = srv.getsockname()[1]
        child = subprocess.Popen([sys.executable, __file__, "client", str(port), "API_KEY=zzz-secret-key"],
                                 stdout=subprocess.PIPE)
        if child.stdout.readline().strip() != b"READY":
            sys.exit("client did not start")
        conn, _ = srv.accept()
        tmp = argv[2] + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.replace(tmp, argv[2])
        ready()
        forever()
    elif mode == "client":
        conn = socket.create_connection(("127.0.0.1", int(argv[2])))
        ready()
        forever()
    elif mode == "churn":
        started = 0
        while True:
            pid = os.fork()
            if pid == 0:
                time.sleep(0.001)
                os._exit(0)
            started += 1
            if started == 20:
                ready()
            os.waitpid(pid, os.WNOHANG)
            try:
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                pass
            time.sleep(0.0005)
    elif mode == "zombie":
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        while True:  # wait until it is a zombie, then say so; never reap it
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.005)
        ready()
        forever()
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv)
