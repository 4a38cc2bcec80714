"""FATE across sites (issue 19): each party runs its own taskhub server; the servers talk gRPC to
each other over mutual TLS, routed by a FATE rollsite-style route table (routes.py). peers.py holds
the channels to the other parties and the ordered, resending outbox; sites.py ties them to the
FATE jobs and the federation of this server."""
