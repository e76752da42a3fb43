// A Java (kafka-clients) share-group peer for Kavari's interop tests, run in
// the JVM's source-file mode with the test cluster's jars:
//
//   java -cp 'KAFKA_HOME/libs/*' JavaShareMember.java BOOTSTRAP GROUP TOPIC
//
// Joins share group GROUP on TOPIC (KIP-932, KafkaShareConsumer with implicit
// acknowledgement: every record a poll returned is accepted), prints
// "HANDLED partition offset" for every record, acknowledges with commitSync
// after each poll that returned records, and stops when stdin closes or
// after two minutes, printing "STOPPED".

import java.time.Duration;
import java.util.List;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;

public class JavaShareMember {
    private static volatile boolean stop = false;

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: JavaShareMember BOOTSTRAP GROUP TOPIC");
            System.exit(2);
        }
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

        long deadline = System.currentTimeMillis() + 120_000;
        try (KafkaShareConsumer<byte[], byte[]> consumer = new KafkaShareConsumer<>(p)) {
            consumer.subscribe(List.of(args[2]));
            System.out.println("SUBSCRIBED");
            System.out.flush();
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
