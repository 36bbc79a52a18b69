//! `--only hops`: where the time of one uncached blocking call goes. N `statSync` calls under
//! pii with `PI_BRIDGE_CACHE=0` and `PI_BRIDGE_HOPS` (`protocol::hops`), at each round trip, the
//! median of each hop (`pi_bridge_tests::hops`) next to the floor (an echo through `ssh … cat`).

use super::{bench_js, first_line, floor, output_ok, Env};
use anyhow::{bail, Result};
use pi_bridge_tests::hops::{calls, Call, HOPS, RETURN};
use pi_bridge_tests::DelayProxy;
use std::path::PathBuf;
use std::time::Duration;

use crate::stats::{fmt_ms, median};

/// Calls of the script's warm-up (`bench/js/hops.cjs`), left out.
const WARM_UP: usize = 20;

pub fn hops_only(pii: PathBuf, rtts: &[u64], n: usize) -> Result<()> {
    let env = Env::plain(pii)?;
    first_line(&env, env.sshd.ssh_config())?; // the agent installed once
    let path = format!("{}/src/hello.txt", env.sshd.project());
    for &rtt in rtts {
        let proxy = DelayProxy::start(env.sshd.addr(), Duration::from_micros(rtt * 500));
        let cfg = env.sshd.ssh_config_via(proxy.port());
        let fl = floor(&env.sshd, &cfg, n)?;
        let file = env.logdir.path().join(format!("hops-{rtt}.txt"));
        let mut cmd = env.pii(&cfg, &bench_js("hops.cjs"), &[&path, &n.to_string()]);
        cmd.env("PI_BRIDGE_CACHE", "0").env("PI_BRIDGE_HOPS", &file);
        let out = output_ok(cmd, "pii hops.cjs")?;
        let text = std::fs::read_to_string(&file)?;
        let (mut all, missing, first) = calls(&text);
        if all.len() <= WARM_UP {
            bail!("{} complete calls in {} ({missing} incomplete, first missing hop {first:?}); script said {out}", all.len(), file.display());
        }
        let measured: Vec<Call> = all.split_off(WARM_UP);
        if let Some(dir) = std::env::var_os("BENCH_HOPS_KEEP") {
            // Profiling aid: the raw stamps and the floor's samples.
            let dir = PathBuf::from(dir);
            std::fs::copy(&file, dir.join(format!("hops-{rtt}.txt")))?;
            let fl: Vec<String> = fl.iter().map(|x| format!("{x}\n")).collect();
            std::fs::write(dir.join(format!("floor-{rtt}.txt")), fl.concat())?;
        }
        if missing > 0 {
            println!(
                "(incomplete calls: the first lacks `{}`)",
                first.unwrap_or_default()
            );
        }
        print_table(rtt, &fl, &measured, missing);
    }
    Ok(())
}

fn print_table(rtt: u64, floor: &[f64], calls: &[Call], missing: usize) {
    let fl = median(floor).unwrap_or(f64::NAN);
    let total: Vec<f64> = calls.iter().map(|c| c.total_us() / 1000.0).collect();
    let tot = median(&total).unwrap_or(f64::NAN);
    println!(
        "\n## +{rtt} ms: {} calls ({missing} incomplete), statSync (m_post → m_ret) median {} ms, floor {} ms, gap {:+.3} ms\n",
        calls.len(),
        fmt_ms(tot),
        fmt_ms(fl),
        tot - fl
    );
    println!("| from → to | where | median µs | p90 µs |\n|---|---|---|---|");
    let names: Vec<&str> = HOPS.iter().map(|h| h.0).chain([RETURN]).collect();
    let mut wire = vec![0.0; calls.len()];
    for (k, pair) in names.windows(2).enumerate() {
        let xs: Vec<f64> = calls.iter().map(|c| c.segments()[k].2).collect();
        if pair[0] == "link_write" || pair[0] == "ag_write" {
            for (w, x) in wire.iter_mut().zip(&xs) {
                *w += x;
            }
        }
        let what = HOPS
            .get(k + 1)
            .map_or("preload main: call returns", |h| h.1);
        println!(
            "| {} → {} | {what} | {:.0} | {:.0} |",
            pair[0],
            pair[1],
            median(&xs).unwrap_or(f64::NAN),
            crate::stats::percentile(&xs, 90.0).unwrap_or(f64::NAN)
        );
    }
    let wire_ms = median(&wire).unwrap_or(f64::NAN) / 1000.0;
    let ours: Vec<f64> = calls
        .iter()
        .zip(&wire)
        .map(|(c, w)| (c.total_us() - w) / 1000.0)
        .collect();
    println!(
        "\nssh ↔ agent wire (link_write → ag_read + ag_write → link_read) median {} ms vs floor {} ms; \
         everything else (node, pii, agent) median {} ms",
        fmt_ms(wire_ms),
        fmt_ms(fl),
        fmt_ms(median(&ours).unwrap_or(f64::NAN))
    );
}
