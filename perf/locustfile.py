"""Locust load test of the search path over gRPC, through the project's own clients (what the services run).

A SearchUser sends single short NER queries, single-sentence embedding requests and rerank calls (a query with
``RERANK_PASSAGES`` candidate sentences, as hybrid search sends them) in the mix of ``TRITONREPO_LOAD_MIX`` (default
``ner_int8=4,sbert_int8=1``; e.g. add ``rerank_int8=1``), real texts from CoNLL-2003, with 0-20 ms think time.
Each call is reported to locust as request type ``grpc`` named after its model, so the CSV/HTML have one row per
model. Run it through ``tritonrepo perf load`` (which checks the p95 targets); ``locust -f perf/locustfile.py
--host 127.0.0.1:8001`` works too.
"""

from grpc.experimental import gevent as grpc_gevent

grpc_gevent.init_gevent()  # grpcio cooperates with locust's gevent loop only after this

import os  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402

from locust import User, between, events, task  # noqa: E402

from tritonrepo.clients import EmbeddingClient, NerClient, RerankClient  # noqa: E402
from tritonrepo.datasets import conll_sentences, short_queries  # noqa: E402

QUERIES = short_queries(1000)
SENTENCES = conll_sentences("test")[:1000]
RERANK_PASSAGES = 20
MIX = dict(item.split("=") for item in os.environ.get("TRITONREPO_LOAD_MIX", "ner_int8=4,sbert_int8=1").split(","))


class SearchUser(User):
    wait_time = between(0.0, 0.02)

    def on_start(self):
        self.clients = {}
        for model in MIX:
            cls = NerClient if model.startswith("ner") else RerankClient if model.startswith("rerank") else \
                EmbeddingClient
            self.clients[model] = cls(self.host, model, timeout_s=5.0)
        self.models, self.weights = list(MIX), [float(w) for w in MIX.values()]

    def on_stop(self):
        for client in self.clients.values():
            client.close()

    @task
    def request(self):
        model = random.choices(self.models, self.weights)[0]
        client = self.clients[model]
        if isinstance(client, NerClient):
            call = lambda: client.entities([random.choice(QUERIES)])  # noqa: E731
        elif isinstance(client, RerankClient):
            call = lambda: client.scores(random.choice(QUERIES), random.sample(SENTENCES, RERANK_PASSAGES))  # noqa
        else:
            call = lambda: client.embed([random.choice(SENTENCES)])  # noqa: E731
        start, error = time.perf_counter(), None
        try:
            call()
        except Exception as e:  # reported to locust as a failure of this model's requests
            error = e
        events.request.fire(request_type="grpc", name=model, response_time=(time.perf_counter() - start) * 1000,
                            response_length=0, exception=error, context={})
