//! The broker a scenario talks to: librdkafka's in-process mock cluster by
//! default, or a real Kafka given with `--brokers` (topics created there
//! with the admin API when missing).

use std::time::Duration;

use anyhow::Context;
use cspulse::config::Config;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

pub struct Broker {
    /// Kept alive for the scenario; `None` with `--brokers`.
    pub cluster: Option<MockCluster<'static, DefaultProducerContext>>,
    pub bootstrap: String,
}

impl Broker {
    /// The mock cluster with every configured topic (`partitions` per input
    /// topic), or the given brokers with the topics created if missing.
    pub fn start(brokers: Option<&str>, config: &Config, partitions: i32) -> anyhow::Result<Broker> {
        let t = &config.kafka.topics;
        let topics = [
            (t.accounts.as_str(), partitions),
            (t.usage.as_str(), partitions),
            (t.tickets.as_str(), partitions),
            (t.revenue.as_str(), partitions),
            (t.alerts.as_str(), 4),
            (t.deadletter.as_str(), 1),
        ];
        match brokers {
            None => {
                let cluster = MockCluster::new(1).context("mock cluster")?;
                for (name, p) in topics {
                    cluster.create_topic(name, p, 1)?;
                }
                let bootstrap = cluster.bootstrap_servers();
                Ok(Broker { cluster: Some(cluster), bootstrap })
            }
            Some(list) => {
                let admin: AdminClient<DefaultClientContext> =
                    ClientConfig::new().set("bootstrap.servers", list).create().context("admin client")?;
                let new: Vec<NewTopic<'_>> =
                    topics.iter().map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(1))).collect();
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
                match std::thread::scope(|s| s.spawn(|| rt.block_on(admin.create_topics(&new, &opts))).join()) {
                    Ok(Ok(results)) => {
                        for r in results {
                            if let Err((name, code)) = r {
                                eprintln!("topic {name}: {code:?} (an existing topic is fine)");
                            }
                        }
                    }
                    Ok(Err(e)) => eprintln!("cannot create topics on {list}: {e} (assuming they exist)"),
                    Err(_) => anyhow::bail!("admin thread panicked"),
                }
                Ok(Broker { cluster: None, bootstrap: list.to_owned() })
            }
        }
    }

    pub fn describe(&self) -> String {
        match self.cluster {
            Some(_) => format!("embedded mock cluster ({})", self.bootstrap),
            None => format!("Kafka at {}", self.bootstrap),
        }
    }
}

/// `cspulse-load broker`: the mock cluster with every topic, in this process
/// for `seconds` (or until killed). Pass the printed address as `--brokers`
/// to a scenario to keep the broker's work out of the scenario's process.
pub fn serve(partitions: i32, core: Option<usize>, seconds: u64) -> anyhow::Result<()> {
    if let Some(core) = core {
        crate::push::pin_self(core);
    }
    let config = crate::push::base_config()?;
    let broker = Broker::start(None, &config, partitions)?;
    println!("{}", broker.bootstrap);
    eprintln!("mock cluster at {} ({partitions} partitions per input topic) for {seconds} s", broker.bootstrap);
    std::thread::sleep(Duration::from_secs(seconds));
    Ok(())
}

/// `cspulse-load broker` as a child process: a mock cluster of its own.
pub struct BrokerProcess {
    child: std::process::Child,
    pub bootstrap: String,
}

impl BrokerProcess {
    pub fn start(core: usize) -> anyhow::Result<Self> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["broker", "--partitions", "16", "--seconds", "900", "--core", &core.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("spawn cspulse-load broker")?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().context("broker stdout")?).read_line(&mut line)?;
        let bootstrap = line.trim().to_owned();
        if bootstrap.is_empty() {
            let _ = child.kill();
            anyhow::bail!("the broker process printed no address");
        }
        Ok(BrokerProcess { child, bootstrap })
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
