#!/usr/bin/env python3
"""Real Kafka clients for the lab e2e: print one outcome line per action.

  kafka_clients.py produce BOOTSTRAP TOPIC [MESSAGE]   -> "OK" or the error name
  kafka_clients.py consume BOOTSTRAP TOPIC GROUP       -> "MSG <value>" lines, then
                                                           "COMMIT OK" / "EMPTY", or the error name
Client library: confluent-kafka (librdkafka) by default; --kafka-python for kafka-python.
Exit status: 0 on OK, 1 on a Kafka error, 2 on usage errors.
"""
import sys


def produce_confluent(bootstrap, topic, message):
    from confluent_kafka import KafkaException, Producer

    # Default settings: librdkafka asks for KIP-714 telemetry
    # (GetTelemetrySubscriptions), which no Cilium role allows; the proxy
    # answers CLUSTER_AUTHORIZATION_FAILED and the client carries on.
    p = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 10000})
    result = {}

    def done(err, _msg):
        result["err"] = err

    try:
        p.produce(topic, message.encode(), callback=done)
        p.flush(15)
    except KafkaException as e:
        return e.args[0].name()
    err = result.get("err")
    if err is None and "err" not in result:
        return "TIMED_OUT"
    return "OK" if err is None else err.name()


def consume_confluent(bootstrap, topic, group):
    from confluent_kafka import Consumer, KafkaError, KafkaException

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "session.timeout.ms": 10000})
    lines = []
    try:
        c.subscribe([topic])
        got = None
        for _ in range(30):
            msg = c.poll(1.0)
            if msg is None:
                if got:
                    break
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                return lines + [msg.error().name()]
            lines.append("MSG " + msg.value().decode(errors="replace"))
            got = msg
        if got is None:
            return lines + ["EMPTY"]
        c.commit(message=got, asynchronous=False)
        return lines + ["COMMIT OK"]
    except KafkaException as e:
        return lines + [e.args[0].name()]
    finally:
        c.close()


def produce_kafka_python(bootstrap, topic, message):
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        p = KafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10000,
                          max_block_ms=10000)
        p.send(topic, message.encode()).get(timeout=15)
        p.close()
        return "OK"
    except KafkaError as e:
        return type(e).__name__


def consume_kafka_python(bootstrap, topic, group):
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    lines = []
    try:
        c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                          auto_offset_reset="earliest", enable_auto_commit=False,
                          consumer_timeout_ms=10000)
        for msg in c:
            lines.append("MSG " + msg.value.decode(errors="replace"))
            break
        if not lines:
            c.close()
            return ["EMPTY"]
        c.commit()
        c.close()
        return lines + ["COMMIT OK"]
    except KafkaError as e:
        return lines + [type(e).__name__]


def main(argv):
    use_kp = "--kafka-python" in argv
    args = [a for a in argv if a != "--kafka-python"]
    if len(args) >= 3 and args[0] == "produce":
        message = args[3] if len(args) > 3 else "hello"
        fn = produce_kafka_python if use_kp else produce_confluent
        out = fn(args[1], args[2], message)
        print(out, flush=True)
        return 0 if out == "OK" else 1
    if len(args) == 4 and args[0] == "consume":
        fn = consume_kafka_python if use_kp else consume_confluent
        lines = fn(args[1], args[2], args[3])
        for line in lines:
            print(line, flush=True)
        return 0 if lines and lines[-1] in ("COMMIT OK", "EMPTY") else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
