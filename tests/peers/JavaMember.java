// A Java (kafka-clients) group peer for Kavari's interop tests, run in the
// JVM's source-file mode with the test cluster's jars:
//
//   java -cp 'KAFKA_HOME/libs/*' JavaMember.java BOOTSTRAP GROUP TOPIC [PROTOCOL]
//
// PROTOCOL "classic" (the default) joins consumer group GROUP on TOPIC with
// the cooperative-sticky assignor; "consumer" uses the consumer group
// protocol of KIP-848, where the broker assigns and sets the session; both
// print "OWNS p,p,..." after every change of their partitions, and commit
// synchronously after each poll that returned records (and before giving
// partitions up). "share" joins share group GROUP instead (KIP-932,
// KafkaShareConsumer with implicit acknowledgement: each poll's records are
// accepted, with commitSync after each poll that returned some). Every
// record handled prints "HANDLED partition offset"; the peer stops when
// stdin closes or after two minutes, printing "STOPPED".

import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.function.Supplier;
import java.util.stream.Collectors;

import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.common.TopicPartition;

public class JavaMember {
    private static volatile boolean stop = false;

    private static void show(Set<Integer> owned) {
        System.out.println("OWNS " + owned.stream().map(String::valueOf).collect(Collectors.joining(",")));
        System.out.flush();
    }

    // Polls until stdin closes or two minutes pass, printing each record and
    // committing after each poll that returned records.
    private static void serve(Supplier<ConsumerRecords<byte[], byte[]>> poll, Runnable commit) {
        long deadline = System.currentTimeMillis() + 120_000;
        while (!stop && System.currentTimeMillis() < deadline) {
            ConsumerRecords<byte[], byte[]> records = poll.get();
            for (ConsumerRecord<byte[], byte[]> r : records) {
                System.out.println("HANDLED " + r.partition() + " " + r.offset());
            }
            if (!records.isEmpty()) {
                commit.run();
            }
            System.out.flush();
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 3 && args.length != 4) {
            System.err.println("usage: JavaMember BOOTSTRAP GROUP TOPIC [classic|consumer|share]");
            System.exit(2);
        }
        String protocol = args.length == 4 ? args[3] : "classic";
        Properties p = new Properties();
        p.put("bootstrap.servers", args[0]);
        p.put("group.id", args[1]);
        p.put("key.deserializer", "org.apache.kafka.common.serialization.ByteArrayDeserializer");
        p.put("value.deserializer", "org.apache.kafka.common.serialization.ByteArrayDeserializer");

        Thread watcher = new Thread(() -> {
            try {
                while (System.in.read() >= 0) { }
            } catch (Exception e) { }
            stop = true;
        });
        watcher.setDaemon(true);
        watcher.start();

        if (protocol.equals("share")) {
            // A share consumer refuses the consumer group settings below.
            try (KafkaShareConsumer<byte[], byte[]> consumer = new KafkaShareConsumer<>(p)) {
                consumer.subscribe(List.of(args[2]));
                serve(() -> consumer.poll(Duration.ofMillis(200)), consumer::commitSync);
            }
        } else {
            p.put("group.protocol", protocol);
            if (protocol.equals("classic")) {
                p.put("partition.assignment.strategy",
                      "org.apache.kafka.clients.consumer.CooperativeStickyAssignor");
                p.put("session.timeout.ms", "6000");
                p.put("heartbeat.interval.ms", "500");
            }
            p.put("enable.auto.commit", "false");
            p.put("auto.offset.reset", "earliest");
            Set<Integer> owned = new TreeSet<>();
            try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(p)) {
                consumer.subscribe(List.of(args[2]), new ConsumerRebalanceListener() {
                    @Override
                    public void onPartitionsRevoked(Collection<TopicPartition> parts) {
                        consumer.commitSync();
                        parts.forEach(tp -> owned.remove(tp.partition()));
                        show(owned);
                    }

                    @Override
                    public void onPartitionsAssigned(Collection<TopicPartition> parts) {
                        parts.forEach(tp -> owned.add(tp.partition()));
                        show(owned);
                    }

                    @Override
                    public void onPartitionsLost(Collection<TopicPartition> parts) {
                        parts.forEach(tp -> owned.remove(tp.partition()));
                        show(owned);
                    }
                });
                serve(() -> consumer.poll(Duration.ofMillis(200)), consumer::commitSync);
            }
        }
        System.out.println("STOPPED");
        System.out.flush();
    }
}
