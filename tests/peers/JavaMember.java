// A Java (kafka-clients) consumer-group peer for Kavari's interop tests, run
// in the JVM's source-file mode with the test cluster's jars:
//
//   java -cp 'KAFKA_HOME/libs/*' JavaMember.java BOOTSTRAP GROUP TOPIC [PROTOCOL]
//
// Joins GROUP on TOPIC with the classic protocol and the cooperative-sticky
// assignor (or, with PROTOCOL "consumer", the consumer group protocol of
// KIP-848, where the broker assigns and sets the session), prints "OWNS p,p,..." after every change of its partitions and
// "HANDLED partition offset" for every record, commits synchronously after
// each poll that returned records (and before giving partitions up), and
// stops when stdin closes or after two minutes, printing "STOPPED".

import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Collectors;

import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;

public class JavaMember {
    private static volatile boolean stop = false;

    private static void show(Set<Integer> owned) {
        System.out.println("OWNS " + owned.stream().map(String::valueOf).collect(Collectors.joining(",")));
        System.out.flush();
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 3 && args.length != 4) {
            System.err.println("usage: JavaMember BOOTSTRAP GROUP TOPIC [PROTOCOL]");
            System.exit(2);
        }
        String protocol = args.length == 4 ? args[3] : "classic";
        Properties p = new Properties();
        p.put("bootstrap.servers", args[0]);
        p.put("group.id", args[1]);
        p.put("group.protocol", protocol);
        if (protocol.equals("classic")) {
            p.put("partition.assignment.strategy",
                  "org.apache.kafka.clients.consumer.CooperativeStickyAssignor");
            p.put("session.timeout.ms", "6000");
            p.put("heartbeat.interval.ms", "500");
        }
        p.put("enable.auto.commit", "false");
        p.put("auto.offset.reset", "earliest");
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

        Set<Integer> owned = new TreeSet<>();
        long deadline = System.currentTimeMillis() + 120_000;
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
            while (!stop && System.currentTimeMillis() < deadline) {
                ConsumerRecords<byte[], byte[]> records = consumer.poll(Duration.ofMillis(200));
                for (ConsumerRecord<byte[], byte[]> r : records) {
                    System.out.println("HANDLED " + r.partition() + " " + r.offset());
                }
                if (!records.isEmpty()) {
                    consumer.commitSync();
                }
                System.out.flush();
            }
        }
        System.out.println("STOPPED");
        System.out.flush();
    }
}
