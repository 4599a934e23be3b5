"""Drives the running TypeScript services through the Python SDK (gen/python).

The way a Python team would use Concord: gRPC stubs from grpcio, events from
JetStream with nats-py, decoded by their ce-type header. Each subcommand checks
what it receives against what the contracts promise, exits 1 naming the first
mismatch, and prints its findings as one JSON object for
test/interop/*.test.ts to check again. Run with gen/python on PYTHONPATH:

    interop.py place-order --products ADDR --orders ADDR --customer ID
    interop.py invalid-order --orders ADDR --request FILE
    interop.py subjects
    interop.py consume-order-events --nats URL [--seed FILE] --orders ADDR --order ID --durable NAME [--filter stream|events]
    interop.py publish-cancelled --nats URL [--seed FILE] [--inbox-prefix PREFIX] --order ID --customer ID --reason TEXT
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import sys
import time
import uuid
from typing import Any, Callable, Dict, List

import grpc
import nats
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

import concord_events
from shop.common.v1 import money_pb2
from shop.orders.v1 import order_service_pb2, order_service_pb2_grpc, order_events_pb2
from shop.products.v1 import product_service_pb2, product_service_pb2_grpc

UNIT_PRICE_MINOR = 1999
INITIAL_STOCK = 10
QUANTITY = 2
TIMEOUT_S = 20
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


class Mismatch(Exception):
    """What the services or JetStream returned differs from what the contracts promise."""


def check(what: str, got: Any, want: Any) -> None:
    if got != want:
        raise Mismatch(f"{what}: got {got!r}, want {want!r}")


def money(m: money_pb2.Money) -> Dict[str, Any]:
    return {"currencyCode": m.currency_code, "amountMinor": m.amount_minor}


def lines(order_lines) -> List[Dict[str, Any]]:
    return [
        {
            "productId": line.product_id,
            "productName": line.product_name,
            "quantity": line.quantity,
            "unitPrice": money(line.unit_price),
            "lineTotal": money(line.line_total),
        }
        for line in order_lines
    ]


def saga_free(order: order_service_pb2.Order) -> order_service_pb2.Order:
    """A copy of the order without the fields the order saga changes."""
    copy = order_service_pb2.Order()
    copy.CopyFrom(order)
    for field in ("state", "version", "update_time"):
        copy.ClearField(field)
    return copy


def channel(address: str, token_variable: str) -> grpc.Channel:
    """TLS trusting the CA in $INTEROP_TLS_CA, with the token in the environment variable
    token_variable on every call; plaintext without a token when INTEROP_TLS_CA is not set."""
    ca = os.environ.get("INTEROP_TLS_CA", "")
    if ca == "":
        return grpc.insecure_channel(address)
    with open(ca, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    token = os.environ.get(token_variable, "")
    if token != "":
        credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
    return grpc.secure_channel(address, credentials)


def place_order(args: argparse.Namespace) -> Dict[str, Any]:
    """Creates a product, orders two of it and reads the order back."""
    with channel(args.products, "INTEROP_ADMIN_TOKEN") as products_channel, channel(args.orders, "INTEROP_CUSTOMER_TOKEN") as orders_channel:
        products = product_service_pb2_grpc.ProductServiceStub(products_channel)
        orders = order_service_pb2_grpc.OrderServiceStub(orders_channel)
        product = products.CreateProduct(
            product_service_pb2.CreateProductRequest(
                name="Python teapot",
                description="created through the Python SDK",
                price=money_pb2.Money(currency_code="EUR", amount_minor=UNIT_PRICE_MINOR),
                initial_stock=INITIAL_STOCK,
            ),
            timeout=TIMEOUT_S,
        ).product
        check("product name", product.name, "Python teapot")
        check("product stock", product.stock, INITIAL_STOCK)
        check("product version", product.version, 1)

        order = orders.CreateOrder(
            order_service_pb2.CreateOrderRequest(
                customer_id=args.customer,
                lines=[order_service_pb2.LineItem(product_id=product.id, quantity=QUANTITY)],
                shipping_address=order_service_pb2.Address(
                    recipient="Guido van Rossum", line1="Science Park 123", city="Amsterdam", postal_code="1098 XG", country_code="NL"
                ),
            ),
            timeout=TIMEOUT_S,
        ).order
        check("order customer", order.customer_id, args.customer)
        check("order state", order.state, order_service_pb2.ORDER_STATE_PENDING)
        check("order lines", len(order.lines), 1)
        line = order.lines[0]
        check("line product", line.product_id, product.id)
        check("line product name", line.product_name, "Python teapot")
        check("line quantity", line.quantity, QUANTITY)
        check("line unit price", money(line.unit_price), {"currencyCode": "EUR", "amountMinor": UNIT_PRICE_MINOR})
        check("line total", money(line.line_total), {"currencyCode": "EUR", "amountMinor": UNIT_PRICE_MINOR * QUANTITY})
        check("order total", money(order.total), {"currencyCode": "EUR", "amountMinor": UNIT_PRICE_MINOR * QUANTITY})
        check("order version", order.version, 1)

        read_back = orders.GetOrder(order_service_pb2.GetOrderRequest(id=order.id), timeout=TIMEOUT_S).order
        # The saga may have confirmed the order already: compare what it does not change.
        check("GetOrder returns what CreateOrder returned", saga_free(read_back), saga_free(order))
        if read_back.state not in (order_service_pb2.ORDER_STATE_PENDING, order_service_pb2.ORDER_STATE_CONFIRMED):
            raise Mismatch(f"GetOrder state: got {order_service_pb2.OrderState.Name(read_back.state)}, want PENDING or CONFIRMED")
        return {
            "productId": product.id,
            "productStock": product.stock,
            "orderId": order.id,
            "customerId": order.customer_id,
            "state": order_service_pb2.OrderState.Name(order.state),
            "lines": lines(order.lines),
            "total": money(order.total),
            "readBackEquals": True,
        }


def invalid_order(args: argparse.Namespace) -> Dict[str, Any]:
    """Sends the CreateOrderRequest in FILE (proto JSON); expects INVALID_ARGUMENT with a google.rpc.BadRequest."""
    with open(args.request, encoding="utf-8") as f:
        request = json_format.Parse(f.read(), order_service_pb2.CreateOrderRequest())
    with channel(args.orders, "INTEROP_CUSTOMER_TOKEN") as orders_channel:
        try:
            order_service_pb2_grpc.OrderServiceStub(orders_channel).CreateOrder(request, timeout=TIMEOUT_S)
        except grpc.RpcError as err:
            check("status code", err.code(), grpc.StatusCode.INVALID_ARGUMENT)
            status = rpc_status.from_call(err)
            if status is None:
                raise Mismatch("INVALID_ARGUMENT came without grpc-status-details-bin") from err
            violations = []
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad_request = error_details_pb2.BadRequest()
                    detail.Unpack(bad_request)
                    violations += [{"field": v.field, "description": v.description} for v in bad_request.field_violations]
            if not violations:
                raise Mismatch("INVALID_ARGUMENT carried no google.rpc.BadRequest field violations") from err
            return {"code": err.code().value[0], "codeName": err.code().name, "message": status.message, "violations": violations}
    raise Mismatch("CreateOrder accepted an invalid request")


def subjects(_: argparse.Namespace) -> Dict[str, Any]:
    """Builds subjects with the generated helpers; every unsafe token value must be refused, and the others, which
    the TypeScript runtime takes too, taken."""
    refused = {}
    for bad in ["", "a.b", "a*", "a>", "a b", "tab\t", "nul\x00", "del\x7f", "bom\ufeff", "nbsp\u00a0"]:
        try:
            concord_events.order_placed_subject(bad)
        except concord_events.SubjectTokenError as err:
            refused[bad] = str(err)
        else:
            raise Mismatch(f"order_placed_subject({bad!r}) was not refused")
    taken = []
    for good in ["nel\u0085", "zero-width\u200b", "caf\u00e9"]:
        try:
            concord_events.order_placed_subject(good)
        except concord_events.SubjectTokenError as err:
            raise Mismatch(f"order_placed_subject({good!r}) was refused: {err}") from err
        taken.append(good)
    return {
        "taken": taken,
        "subject": concord_events.order_placed_subject("0190a3c2-7d1e-7b4a-9c1f-2b3c4d5e6f70"),
        "fromMessage": concord_events.subject_of(order_events_pb2.OrderCancelled(order_id="o-1")),
        "refused": refused,
    }


async def connect_nats(args: argparse.Namespace) -> nats.NATS:
    """Connects as README's "Using Concord from another language" has it: with a user's nkey seed (nkeys_seed, which
    takes the nkeys package) when --seed names one, and on the reply inbox that user may subscribe to."""
    options: Dict[str, Any] = {"name": "concord-interop-python"}
    if args.seed:
        options["nkeys_seed"] = args.seed
    if getattr(args, "inbox_prefix", None):
        options["inbox_prefix"] = args.inbox_prefix
    return await nats.connect(args.nats, **options)


async def consume_order_events(args: argparse.Namespace) -> Dict[str, Any]:
    """Reads SHOP_ORDERS through a durable pull consumer until OrderPlaced and OrderConfirmed of the order are in,
    decoding by ce-type, and checks them against the order as GetOrder returns it."""
    with channel(args.orders, "INTEROP_CUSTOMER_TOKEN") as orders_channel:
        order = order_service_pb2_grpc.OrderServiceStub(orders_channel).GetOrder(
            order_service_pb2.GetOrderRequest(id=args.order), timeout=TIMEOUT_S
        ).order
    nc = await connect_nats(args)
    try:
        js = nc.jetstream()
        stream = concord_events.SHOP_ORDERS_STREAM
        subscription = await js.pull_subscribe(
            stream.subjects[0],
            durable=args.durable,
            stream=stream.name,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                # Several filter subjects (nats-server 2.10 and later) in place of the stream's.
                filter_subjects=[concord_events.ORDER_PLACED_FILTER_SUBJECT, concord_events.ORDER_CONFIRMED_FILTER_SUBJECT] if args.filter == "events" else None,
            ),
        )
        wanted = {concord_events.ORDER_PLACED_TYPE_NAME, concord_events.ORDER_CONFIRMED_TYPE_NAME}
        found: Dict[str, Dict[str, Any]] = {}
        deadline = time.monotonic() + TIMEOUT_S
        while wanted - found.keys():
            if time.monotonic() > deadline:
                raise Mismatch(f"timed out with {sorted(found)} of the events of order {args.order}")
            try:
                messages = await subscription.fetch(20, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for msg in messages:
                event = decode_order_event(msg, order)
                if event is not None:
                    found[event["type"]] = event
                await msg.ack_sync()
        info = await subscription.consumer_info()
        return {
            "placed": found[concord_events.ORDER_PLACED_TYPE_NAME],
            "confirmed": found[concord_events.ORDER_CONFIRMED_TYPE_NAME],
            "consumer": {
                "durable": info.config.durable_name,
                "stream": info.stream_name,
                "ackPending": info.num_ack_pending,
                "filters": [info.config.filter_subject] if info.config.filter_subject else info.config.filter_subjects,
            },
        }
    finally:
        await nc.close()


def decode_order_event(msg, order) -> Dict[str, Any] | None:
    """Decodes one message by its ce-type and checks headers and fields; None for other orders and types."""
    headers = msg.headers or {}
    type_name = headers.get(concord_events.HEADER_TYPE, "")
    if type_name not in concord_events.EVENTS_BY_TYPE:
        raise Mismatch(f"message on {msg.subject} has ce-type {type_name!r}, which is no event of the contracts")
    event = concord_events.decode(type_name, msg.data)
    if type_name not in (concord_events.ORDER_PLACED_TYPE_NAME, concord_events.ORDER_CONFIRMED_TYPE_NAME) or event.order_id != order.id:
        return None
    result = {
        "type": type_name,
        "subject": msg.subject,
        "id": headers.get(concord_events.HEADER_ID, ""),
        "source": headers.get(concord_events.HEADER_SOURCE, ""),
        "time": headers.get(concord_events.HEADER_TIME, ""),
        "traceparent": headers.get(concord_events.HEADER_TRACEPARENT, ""),
        "orderId": event.order_id,
        "customerId": event.customer_id,
        "total": money(event.total),
    }
    if type_name == concord_events.ORDER_PLACED_TYPE_NAME:
        result["lines"] = lines(event.lines)
        result["linesVersion"] = event.lines_version
        check("OrderPlaced lines", result["lines"], lines(order.lines))
        check("OrderPlaced lines_version", event.lines_version, 1)
    check(f"{type_name} customer", event.customer_id, order.customer_id)
    check(f"{type_name} total", result["total"], money(order.total))
    check(f"{type_name} subject", msg.subject, concord_events.subject_of(event))
    check(f"{type_name} ce-specversion", headers.get(concord_events.HEADER_SPEC_VERSION), concord_events.SPEC_VERSION)
    check(f"{type_name} content-type", headers.get(concord_events.HEADER_CONTENT_TYPE), concord_events.CONTENT_TYPE)
    check(f"{type_name} ce-datacontenttype", headers.get(concord_events.HEADER_DATA_CONTENT_TYPE), concord_events.CONTENT_TYPE)
    check(f"{type_name} ce-traceparent", headers.get(concord_events.HEADER_CE_TRACEPARENT), result["traceparent"])
    check(f"{type_name} Nats-Msg-Id", headers.get(concord_events.HEADER_MSG_ID), result["id"])
    check(f"{type_name} has a ce-id", result["id"] != "", True)
    check(f"{type_name} has a ce-source", result["source"] != "", True)
    check(f"{type_name} traceparent is W3C", bool(TRACEPARENT.match(result["traceparent"])), True)
    datetime.datetime.fromisoformat(result["time"].replace("Z", "+00:00"))
    return result


async def publish_cancelled(args: argparse.Namespace) -> Dict[str, Any]:
    """Publishes OrderCancelled as a Concord service would: generated subject, CloudEvents headers, id as Nats-Msg-Id."""
    event = order_events_pb2.OrderCancelled(order_id=args.order, customer_id=args.customer, reason=args.reason)
    subject = concord_events.subject_of(event)
    event_id = str(uuid.uuid4())
    traceparent = f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"
    headers = {
        concord_events.HEADER_SPEC_VERSION: concord_events.SPEC_VERSION,
        concord_events.HEADER_ID: event_id,
        concord_events.HEADER_MSG_ID: event_id,
        concord_events.HEADER_TYPE: concord_events.ORDER_CANCELLED_TYPE_NAME,
        concord_events.HEADER_SOURCE: "orders",
        concord_events.HEADER_TIME: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        concord_events.HEADER_DATA_CONTENT_TYPE: concord_events.CONTENT_TYPE,
        concord_events.HEADER_CONTENT_TYPE: concord_events.CONTENT_TYPE,
        concord_events.HEADER_CE_TRACEPARENT: traceparent,
        concord_events.HEADER_TRACEPARENT: traceparent,
    }
    nc = await connect_nats(args)
    try:
        ack = await nc.jetstream().publish(subject, event.SerializeToString(), headers=headers, timeout=TIMEOUT_S)
    finally:
        await nc.close()
    check("stream", ack.stream, concord_events.ORDER_CANCELLED_STREAM)
    check("duplicate", bool(ack.duplicate), False)
    return {"id": event_id, "subject": subject, "stream": ack.stream, "sequence": ack.seq}


COMMANDS: Dict[str, Callable[[argparse.Namespace], Any]] = {
    "place-order": place_order,
    "invalid-order": invalid_order,
    "subjects": subjects,
    "consume-order-events": consume_order_events,
    "publish-cancelled": publish_cancelled,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    place = sub.add_parser("place-order")
    place.add_argument("--products", required=True)
    place.add_argument("--orders", required=True)
    place.add_argument("--customer", required=True)
    invalid = sub.add_parser("invalid-order")
    invalid.add_argument("--orders", required=True)
    invalid.add_argument("--request", required=True)
    sub.add_parser("subjects")
    consume = sub.add_parser("consume-order-events")
    consume.add_argument("--nats", required=True)
    consume.add_argument("--seed", default="")
    consume.add_argument("--orders", required=True)
    consume.add_argument("--order", required=True)
    consume.add_argument("--durable", required=True)
    consume.add_argument("--filter", choices=["stream", "events"], default="stream")
    publish = sub.add_parser("publish-cancelled")
    publish.add_argument("--nats", required=True)
    publish.add_argument("--seed", default="")
    publish.add_argument("--inbox-prefix", default="")
    publish.add_argument("--order", required=True)
    publish.add_argument("--customer", required=True)
    publish.add_argument("--reason", default="")
    args = parser.parse_args()
    try:
        result = COMMANDS[args.command](args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
    except (Mismatch, grpc.RpcError, nats.errors.Error) as err:
        print(f"interop.py {args.command}: {err}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
