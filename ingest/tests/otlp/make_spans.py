"""Builds the OTLP messages of the OTLP ingest test with the official
OpenTelemetry Python SDK, as the Collector's Kafka exporter would write them.

Spans are recorded by the SDK (TracerProvider + in-memory exporter) and
encoded by opentelemetry-exporter-otlp-proto-common's `encode_spans` into an
`ExportTraceServiceRequest`: protobuf bytes for `otlp_proto`, and for
`otlp_json` the OTLP/JSON form (camelCase, enums as integers, 64-bit
integers as strings, trace and span ids as hex, as the Collector writes it).

Message D is one agent run exported in two messages (tool spans first, the
agent span later, with a model that has no price).

Usage: make_spans.py TENANT OTHER_TENANT ORGANIZATION PROJECT CONVERSATION
Prints one JSON object: {"messages": [{"label", "encoding", "payload_hex"}],
"spans": {label: {"trace_id", "span_id"}}, "base_ms": ...}.
"""

import base64
import json
import sys
import time

from google.protobuf.json_format import MessageToDict
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

MS = 1_000_000


def tracer_for(resource_attributes):
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(resource_attributes))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("agentmeter.test", "1.0"), exporter


def span(tracer, name, start, duration_ms, attributes, parent=None, error=None):
    context = trace.set_span_in_context(parent) if parent is not None else None
    s = tracer.start_span(name, context=context, start_time=start, attributes=attributes)
    if error is not None:
        s.set_status(Status(StatusCode.ERROR, error))
    return s, start + int(duration_ms * MS)


def finish(pairs):
    for s, end in pairs:
        s.end(end_time=end)


def ids(s):
    c = s.get_span_context()
    return {"trace_id": format(c.trace_id, "032x"), "span_id": format(c.span_id, "016x")}


def otlp_json(request):
    """The Collector's OTLP/JSON: protobuf JSON mapping with hex ids."""
    d = MessageToDict(request, use_integers_for_enums=True)
    for rs in d.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in sp:
                        sp[key] = base64.b64decode(sp[key]).hex()
    return json.dumps(d).encode()


def main():
    tenant, other_tenant, organization, project, conversation = sys.argv[1:6]
    base = time.time_ns() - 10 * 60 * 1000 * MS
    base -= base % (60 * 1000 * MS)  # whole minute: every span of a trace in one rollup bucket
    spans = {}

    # Message A (otlp_proto), current attribute names; dimensions on the resource.
    tracer, exported_a = tracer_for({
        "service.name": "support-agent",
        "agentmeter.tenant_id": tenant,
        "agentmeter.organization_id": organization,
        "agentmeter.project_id": project,
    })
    agent, agent_end = span(tracer, "invoke_agent support-bot", base, 3000, {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.id": "support-bot",
        "gen_ai.agent.name": "Support Bot",
        "gen_ai.conversation.id": conversation,
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 200,
        "agentmeter.cost_usd": "0.0123",
        "enduser.id": "alice",
    })
    inner = [
        span(tracer, "chat gpt-4o", base + 10 * MS, 900, {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 600, "gen_ai.usage.output_tokens": 120,
        }, parent=agent),
        span(tracer, "execute_tool search_docs", base + 1000 * MS, 250, {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search_docs",
            "gen_ai.tool.call.id": "call_1", "gen_ai.tool.type": "function",
            "mcp.method.name": "tools/call", "server.address": "docs-mcp",
        }, parent=agent),
        span(tracer, "execute_tool fetch_ticket", base + 1300 * MS, 1200, {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "fetch_ticket",
            "gen_ai.tool.call.id": "call_2", "error.type": "timeout",
        }, parent=agent, error="deadline exceeded"),
        span(tracer, "execute_tool send_mail", base + 2600 * MS, 40, {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "send_mail",
            "gen_ai.tool.call.id": "call_3", "error.type": "smtplib.SMTPException",
        }, parent=agent, error="relay refused"),
    ]
    spans["agent_a"] = ids(agent)
    for label, (s, _) in zip(["chat_in_agent", "search_docs", "fetch_ticket", "send_mail"], inner):
        spans[label] = ids(s)
    finish(inner + [(agent, agent_end)])
    trace_one = list(exported_a.get_finished_spans())
    finish([
        span(tracer, "GET /health", base + 100 * MS, 5, {"http.request.method": "GET", "url.path": "/health"}),
        span(tracer, "embeddings text-embedding-3-small", base + 200 * MS, 30, {
            "gen_ai.operation.name": "embeddings", "gen_ai.usage.input_tokens": 42,
        }),
    ])
    standalone, standalone_end = span(tracer, "chat gpt-4o", base + 5000 * MS, 800, {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 300, "gen_ai.usage.output_tokens": 50,
    })
    spans["standalone_chat"] = ids(standalone)
    finish([(standalone, standalone_end)])
    message_a = encode_spans(exported_a.get_finished_spans())

    # Message B (otlp_json), deprecated token names; the tenant on the span
    # wins over another tenant on the resource; two spans that break the contract.
    tracer_b, exported_b = tracer_for({
        "service.name": "planner", "agentmeter.tenant_id": other_tenant,
        "agentmeter.organization_id": organization,
    })
    planner, planner_end = span(tracer_b, "invoke_agent planner", base + 20_000 * MS, 1500, {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner",
        "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.prompt_tokens": 400, "gen_ai.usage.completion_tokens": 80,
        "agentmeter.tenant_id": tenant,
    })
    lookup = span(tracer_b, "execute_tool lookup", base + 20_100 * MS, 100, {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup", "agentmeter.tenant_id": tenant,
    }, parent=planner)
    backwards = span(tracer_b, "execute_tool backwards", base + 20_500 * MS, 0, {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "backwards", "agentmeter.tenant_id": tenant,
    }, parent=planner)
    spans["planner"] = ids(planner)
    spans["lookup"] = ids(lookup[0])
    spans["backwards"] = ids(backwards[0])
    finish([lookup, (backwards[0], backwards[1] - 5 * MS), (planner, planner_end)])
    tracer_c, exported_c = tracer_for({"service.name": "no-tenant"})
    orphan = span(tracer_c, "chat gpt-4o", base + 30_000 * MS, 100, {
        "gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 7,
    })
    spans["no_tenant"] = ids(orphan[0])
    finish([orphan])
    message_b = encode_spans(list(exported_b.get_finished_spans()) + list(exported_c.get_finished_spans()))

    # Message C: the Collector exports trace one again (a retry after a timeout).
    message_c = encode_spans(trace_one)

    # Messages D1 (otlp_proto) and D2 (otlp_json): one agent run split over
    # two exports, as a batching SDK sends it: the tool spans end first and
    # travel without their agent span. One tool is directly under the agent,
    # one under a framework step (not a GenAI span) that travels with it.
    # The agent's model has no price and the span no cost: its cost is unknown.
    tracer_d, exported_d = tracer_for({
        "service.name": "research-agent", "agentmeter.tenant_id": tenant,
        "agentmeter.organization_id": organization, "agentmeter.project_id": project,
    })
    researcher, researcher_end = span(tracer_d, "invoke_agent researcher", base + 40_000 * MS, 4000, {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "researcher",
        "gen_ai.request.model": "claude-unpriced", "gen_ai.usage.input_tokens": 700, "gen_ai.usage.output_tokens": 90,
    })
    web_search = span(tracer_d, "execute_tool web_search", base + 40_200 * MS, 300, {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "web_search", "mcp.server.name": "search-mcp",
    }, parent=researcher)
    step, step_end = span(tracer_d, "graph.step summarize", base + 41_000 * MS, 1000, {"graph.node": "summarize"}, parent=researcher)
    summarize = span(tracer_d, "execute_tool summarize", base + 41_100 * MS, 500, {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "summarize",
    }, parent=step)
    spans["researcher"] = ids(researcher)
    spans["web_search"] = ids(web_search[0])
    spans["summarize"] = ids(summarize[0])
    finish([web_search, summarize, (step, step_end)])
    message_d1 = encode_spans(exported_d.get_finished_spans())
    exported_d.clear()
    finish([(researcher, researcher_end)])
    message_d2 = encode_spans(exported_d.get_finished_spans())

    out = {
        "base_ms": base // MS,
        "spans": spans,
        "messages": [
            {"label": "a", "encoding": "otlp_proto", "payload_hex": message_a.SerializeToString().hex()},
            {"label": "b", "encoding": "otlp_json", "payload_hex": otlp_json(message_b).hex()},
            {"label": "c", "encoding": "otlp_proto", "payload_hex": message_c.SerializeToString().hex()},
            {"label": "d1", "encoding": "otlp_proto", "payload_hex": message_d1.SerializeToString().hex()},
            {"label": "d2", "encoding": "otlp_json", "payload_hex": otlp_json(message_d2).hex()},
            {"label": "broken", "encoding": "otlp_proto", "payload_hex": (b"\x0a\xff\xff\xff\x0fnot a protobuf").hex()},
        ],
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
