// The Java client (kafka-clients) as a peer of kavari-load: the same
// workloads as the other peers (benches/src/peer.rs has the contract), one
// per JVM so its peak RSS is its own. The producer and consumer keep the
// client's defaults (4.x: acks=all, idempotence on, linger.ms=5) but for
// what every peer sets alike: idempotence when the driver asks, and the
// consumer's fetch wait of 20 ms.
//
// Run in Java's source-file mode with the Kafka jars on the class path:
//   java -cp 'KAFKA_HOME/libs/*' LoadPeer.java publish BOOTSTRAP TOPIC COUNT SIZE [idempotent|plain]
//   java -cp 'KAFKA_HOME/libs/*' LoadPeer.java consume BOOTSTRAP TOPIC COUNT GROUP
//   java -cp 'KAFKA_HOME/libs/*' LoadPeer.java latency BOOTSTRAP TOPIC RATE SECONDS GROUP
// Prints one line: RESULT key=value ...

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Semaphore;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class LoadPeer {
    static final int WINDOW = 20_000;

    public static void main(String[] args) throws Exception {
        String line;
        switch (args[0]) {
            case "publish":
                line = publish(args[1], args[2], Integer.parseInt(args[3]), Integer.parseInt(args[4]),
                        args.length > 5 ? args[5] : null);
                break;
            case "consume":
                line = consume(args[1], args[2], Integer.parseInt(args[3]), args[4]);
                break;
            case "latency":
                line = latency(args[1], args[2], Long.parseLong(args[3]), Long.parseLong(args[4]), args[5]);
                break;
            default:
                System.err.println("LoadPeer: publish, consume or latency");
                System.exit(2);
                return;
        }
        System.out.println(line);
        System.exit(0);
    }

    static KafkaProducer<byte[], byte[]> producer(String bootstrap, String idempotence, String lingerMs) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("key.serializer", ByteArraySerializer.class.getName());
        p.put("value.serializer", ByteArraySerializer.class.getName());
        if ("idempotent".equals(idempotence)) p.put("enable.idempotence", "true");
        if ("plain".equals(idempotence)) p.put("enable.idempotence", "false");
        if (lingerMs != null) p.put("linger.ms", lingerMs);
        return new KafkaProducer<>(p);
    }

    static KafkaConsumer<byte[], byte[]> consumer(String bootstrap, String group, String topic, String reset) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("group.id", group);
        p.put("auto.offset.reset", reset);
        p.put("fetch.max.wait.ms", "20");
        p.put("key.deserializer", ByteArrayDeserializer.class.getName());
        p.put("value.deserializer", ByteArrayDeserializer.class.getName());
        KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p);
        c.subscribe(Collections.singletonList(topic));
        return c;
    }

    static ProducerRecord<byte[], byte[]> record(String topic, String key, byte[] value) {
        ProducerRecord<byte[], byte[]> r =
                new ProducerRecord<>(topic, key.getBytes(StandardCharsets.UTF_8), value);
        r.headers().add("msg_type", "Payload".getBytes(StandardCharsets.UTF_8));
        r.headers().add("content-type", "application/msgpack".getBytes(StandardCharsets.UTF_8));
        return r;
    }

    static String publish(String bootstrap, String topic, int count, int size, String idempotence)
            throws Exception {
        byte[] value = new byte[size];
        java.util.Arrays.fill(value, (byte) 0xab);
        AtomicLong errors = new AtomicLong();
        Semaphore window = new Semaphore(WINDOW);
        try (KafkaProducer<byte[], byte[]> producer = producer(bootstrap, idempotence, null)) {
            long started = System.nanoTime();
            for (int i = 0; i < count; i++) {
                window.acquire();
                producer.send(record(topic, "key-" + (i % 1024), value), (meta, e) -> {
                    if (e != null) errors.incrementAndGet();
                    window.release();
                });
            }
            producer.flush();
            window.acquire(WINDOW);
            double secs = (System.nanoTime() - started) / 1e9;
            return String.format("RESULT msgs_per_s=%.0f mb_per_s=%.1f errors=%d rss_kb=%d",
                    count / secs, (double) count * (size + 40) / secs / 1e6, errors.get(), peakRssKb());
        }
    }

    static String consume(String bootstrap, String topic, int count, String group) {
        try (KafkaConsumer<byte[], byte[]> c = consumer(bootstrap, group, topic, "earliest")) {
            // seen counts the records after the first, which starts the clock.
            long started = 0;
            int seen = 0;
            while (seen + 1 < count) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(100))) {
                    if (!Msgpack.decodes(r.value())) throw new IllegalStateException("a value did not decode");
                    if (started == 0) started = System.nanoTime();
                    else seen++;
                }
            }
            double secs = (System.nanoTime() - started) / 1e9;
            return String.format("RESULT msgs_per_s=%.0f rss_kb=%d", seen / secs, peakRssKb());
        }
    }

    static String latency(String bootstrap, String topic, long rate, long seconds, String group)
            throws Exception {
        int total = (int) (rate * seconds);
        List<Long> samples = Collections.synchronizedList(new ArrayList<>(total));
        Thread reader = new Thread(() -> {
            try (KafkaConsumer<byte[], byte[]> c = consumer(bootstrap, group, topic, "latest")) {
                long deadline = System.nanoTime() + Duration.ofSeconds(seconds + 60).toNanos();
                while (samples.size() < total && System.nanoTime() < deadline) {
                    for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(100))) {
                        byte[] v = r.value();
                        if (v != null && v.length == 8) {
                            long sent = ByteBuffer.wrap(v).order(ByteOrder.LITTLE_ENDIAN).getLong();
                            samples.add(Math.max(0, micros() - sent));
                        }
                    }
                }
            }
        });
        reader.start();
        Thread.sleep(3000); // join the group first
        try (KafkaProducer<byte[], byte[]> producer = producer(bootstrap, null, "1")) {
            long intervalNanos = 1_000_000_000L / Math.max(1, rate);
            long next = System.nanoTime();
            for (int i = 0; i < total; i++) {
                long wait = next - System.nanoTime();
                if (wait > 0) Thread.sleep(wait / 1_000_000, (int) (wait % 1_000_000));
                next += intervalNanos;
                byte[] stamp = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(micros()).array();
                producer.send(record(topic, "k" + (i % 64), stamp));
            }
        }
        reader.join();
        long[] sorted = samples.stream().mapToLong(Long::longValue).sorted().toArray();
        return String.format("RESULT samples=%d p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f rss_kb=%d",
                sorted.length, pct(sorted, 0.5), pct(sorted, 0.99), pct(sorted, 0.999), peakRssKb());
    }

    /** The q quantile of sorted microseconds, in milliseconds (as measure.rs rounds it). */
    static double pct(long[] sorted, double q) {
        if (sorted.length == 0) return Double.NaN;
        int i = (int) Math.round((sorted.length - 1) * q);
        return sorted[Math.min(i, sorted.length - 1)] / 1000.0;
    }

    static long micros() {
        java.time.Instant now = java.time.Instant.now();
        return now.getEpochSecond() * 1_000_000L + now.getNano() / 1_000;
    }

    /** This process's peak resident set size in KiB (VmHWM), 0 if unknown. */
    static long peakRssKb() {
        try {
            for (String l : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (l.startsWith("VmHWM:")) return Long.parseLong(l.split("\\s+")[1]);
            }
        } catch (Exception e) {
            // unknown
        }
        return 0;
    }

    /**
     * The consume workload's value as the other peers decode it: a
     * MessagePack map of string keys to a string (id) and bytes (body),
     * walked without keeping the body.
     */
    static final class Msgpack {
        private final byte[] b;
        private int at;

        private Msgpack(byte[] b) {
            this.b = b;
        }

        static boolean decodes(byte[] value) {
            if (value == null) return false;
            try {
                Msgpack m = new Msgpack(value);
                int entries = m.mapHeader();
                for (int i = 0; i < entries; i++) {
                    m.skipString();
                    m.skipValue();
                }
                return m.at == value.length;
            } catch (RuntimeException e) {
                return false;
            }
        }

        private int u8() {
            return b[at++] & 0xff;
        }

        private int u16() {
            return (u8() << 8) | u8();
        }

        private int u32() {
            return (u16() << 16) | u16();
        }

        private int mapHeader() {
            int t = u8();
            if ((t & 0xf0) == 0x80) return t & 0x0f;
            if (t == 0xde) return u16();
            throw new IllegalStateException("not a map");
        }

        private void skip(int n) {
            if (n < 0 || at + n > b.length) throw new IllegalStateException("short");
            at += n;
        }

        private void skipString() {
            int t = u8();
            if ((t & 0xe0) == 0xa0) skip(t & 0x1f);
            else if (t == 0xd9) skip(u8());
            else if (t == 0xda) skip(u16());
            else if (t == 0xdb) skip(u32());
            else throw new IllegalStateException("not a string");
        }

        private void skipValue() {
            int t = b[at] & 0xff;
            if ((t & 0xe0) == 0xa0 || t == 0xd9 || t == 0xda || t == 0xdb) {
                skipString();
                return;
            }
            at++;
            if (t == 0xc4) skip(u8());
            else if (t == 0xc5) skip(u16());
            else if (t == 0xc6) skip(u32());
            else if ((t & 0xf0) == 0x90) { // fixarray of small ints (bytes as a sequence)
                for (int i = 0; i < (t & 0x0f); i++) skipValue();
            } else if (t <= 0x7f || t >= 0xe0) {
                // a fixint
            } else if (t == 0xcc) skip(1);
            else throw new IllegalStateException("unexpected type " + t);
        }
    }
}
