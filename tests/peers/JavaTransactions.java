// A Java (kafka-clients) transactional producer for Kavari's read_committed
// tests, run in the JVM's source-file mode with the test cluster's jars:
//
//   java -cp 'KAFKA_HOME/libs/*' JavaTransactions.java BOOTSTRAP TOPIC TXN_ID TRANSACTIONS
//
// Writes TRANSACTIONS transactions of five records each, committing the
// even ones and aborting the odd ones (after a flush, so the aborted
// records are in the log). Record n of transaction t carries
// {"key":"t<t>","seq":<t*5+n>} as JSON, with the headers Kavari's readers
// go by (msg_type Ticket, content-type application/json). Prints
// "COMMITTED t" or "ABORTED t" per transaction, then "DONE".

import java.nio.charset.StandardCharsets;
import java.util.Properties;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;

public class JavaTransactions {
    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: JavaTransactions BOOTSTRAP TOPIC TXN_ID TRANSACTIONS");
            System.exit(2);
        }
        Properties p = new Properties();
        p.put("bootstrap.servers", args[0]);
        p.put("transactional.id", args[2]);
        p.put("key.serializer", "org.apache.kafka.common.serialization.StringSerializer");
        p.put("value.serializer", "org.apache.kafka.common.serialization.StringSerializer");
        String topic = args[1];
        int transactions = Integer.parseInt(args[3]);
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            producer.initTransactions();
            for (int t = 0; t < transactions; t++) {
                producer.beginTransaction();
                for (int n = 0; n < 5; n++) {
                    String key = "t" + t;
                    String value = "{\"key\":\"" + key + "\",\"seq\":" + (t * 5 + n) + "}";
                    ProducerRecord<String, String> record = new ProducerRecord<>(topic, key, value);
                    record.headers().add("msg_type", "Ticket".getBytes(StandardCharsets.UTF_8));
                    record.headers().add("content-type", "application/json".getBytes(StandardCharsets.UTF_8));
                    producer.send(record);
                }
                producer.flush();
                if (t % 2 == 0) {
                    producer.commitTransaction();
                    System.out.println("COMMITTED " + t);
                } else {
                    producer.abortTransaction();
                    System.out.println("ABORTED " + t);
                }
                System.out.flush();
            }
        }
        System.out.println("DONE");
        System.out.flush();
    }
}
