"""A minimal HTTP/2 client with prior knowledge (the `h2` package): sends
every PATH as its own stream on ONE connection, all before reading any
answer, then prints one line per stream: `<status> <body>` in path order.

    python h2_client.py PORT PATH [PATH...]
"""

import socket
import sys

import h2.config
import h2.connection
import h2.events


def main():
    port, paths = int(sys.argv[1]), sys.argv[2:]
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    streams = {}
    for path in paths:
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":path", path), (":scheme", "http"),
                                (":authority", f"127.0.0.1:{port}")], end_stream=True)
        streams[sid] = {"status": None, "body": b"", "done": False}
    sock.sendall(conn.data_to_send())
    while not all(s["done"] for s in streams.values()):
        data = sock.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                streams[event.stream_id]["status"] = dict(event.headers)[b":status"].decode()
            elif isinstance(event, h2.events.DataReceived):
                streams[event.stream_id]["body"] += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                streams[event.stream_id]["done"] = True
            elif isinstance(event, h2.events.StreamReset):
                streams[event.stream_id]["done"] = True
                streams[event.stream_id]["status"] = f"reset-{event.error_code}"
        sock.sendall(conn.data_to_send())
    for sid in sorted(streams):
        s = streams[sid]
        print(s["status"], s["body"].decode(errors="replace").replace("\n", " "))


if __name__ == "__main__":
    main()
