//! `writ-bench policy`: Writ's verdict latency and throughput beside raw Cedar on the same
//! requests, at several bundle sizes.
//!
//! The bundles are generated to look like a company's: connectors with read and write action
//! groups, permits per team group within the grant, plain forbids on production writes, approval
//! gates on large amounts, office-hours rules per team, and one rule that applies to everything.
//! Each request is built once (Cedar request and entities, validated against the schema) and then
//! evaluated three ways: raw `Authorizer::is_authorized` over the whole policy set, Writ's verdict
//! on the same Cedar request (slicing, three-way verdict, explanation), and Writ end to end from a
//! `PolicyRequest` (which also builds and validates the Cedar request and entities).

use std::time::Instant;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;
use writ_policy::cedar_policy::{self, Authorizer, Entities, Request};
use writ_policy::{Bundle, PolicyRequest, SourceFile};

use crate::{Global, machine_description, percentile};

const CONNECTORS: usize = 20;
const OPS: usize = 3;
const TEAMS: usize = 50;

#[derive(Debug, Serialize)]
pub struct PolicyBenchReport {
    machine: String,
    requests: usize,
    iterations: usize,
    rows: Vec<PolicyBenchRow>,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50_us: f64,
    p99_us: f64,
    per_s: f64,
}

#[derive(Debug, Serialize)]
struct PolicyBenchRow {
    policies: usize,
    mean_action_slice: f64,
    /// `Authorizer::is_authorized` over the whole policy set.
    cedar: Latency,
    /// `Bundle::evaluate_cedar`: slicing, the three-way verdict and its explanation.
    writ: Latency,
    /// `Bundle::evaluate`: as `writ`, plus building the Cedar request and entities.
    writ_end_to_end: Latency,
    /// writ p50 / cedar p50 (below 1 is faster than raw Cedar).
    ratio_p50: f64,
    ratio_p99: f64,
    verdicts: VerdictMix,
}

#[derive(Debug, Default, Serialize)]
struct VerdictMix {
    allow: usize,
    deny: usize,
    require_approval: usize,
}

fn schema() -> String {
    let mut s = String::from(
        "entity Group;\nentity User in [Group];\nentity Agent in [User, Group] { user: User };\n\
         entity Resource { env: String };\n\
         type Grant = { id: String, scopes: Set<String>, expires_at: Long };\n\
         type Time = { unix: Long, hour: Long, minute: Long, weekday: Long };\n\
         type Approval = { granted: Bool, approvers: Set<String> };\n\
         type Ctx = { args: { amount: Long }, grant: Grant, intent: String, time: Time, approval: Approval };\n",
    );
    for c in 0..CONNECTORS {
        s.push_str(&format!("action \"c{c}.read\", \"c{c}.write\";\n"));
        for o in 0..OPS {
            for (kind, group) in [("get", "read"), ("put", "write")] {
                s.push_str(&format!(
                    "action \"c{c}.{kind}{o}\" in [\"c{c}.{group}\"] appliesTo {{ principal: [Agent], resource: [Resource], context: Ctx }};\n"
                ));
            }
        }
    }
    s
}

/// Connector and team of policy `i`: spread so that every size covers connectors and teams evenly.
fn spread(i: usize) -> (usize, usize) {
    ((i * 7) % CONNECTORS, (i * 13) % TEAMS)
}

fn policies(n: usize) -> String {
    let mut s = String::from(
        "@id(\"expired-grants-never-act\")\n@reason(\"the grant has expired\")\n\
         forbid (principal, action, resource) when { context.grant.expires_at <= context.time.unix };\n",
    );
    for i in 1..n {
        // Forbids and gates (i % 5 in 2..=4) aim at the connector and team of the write permit
        // just before them, so that they bite on requests that would otherwise be allowed.
        let (c, t) = match i % 5 {
            0 | 1 => spread(i),
            r => spread(i + 1 - r),
        };
        let o = i % OPS;
        let k = 1000 * (1 + i % 10);
        let body = match i % 5 {
            0 | 1 => {
                let g = if i % 5 == 0 { "read" } else { "write" };
                format!(
                    "@reason(\"team{t} may {g} c{c} within the grant\")\n\
                     permit (principal in Group::\"team{t}\", action in Action::\"c{c}.{g}\", resource)\n\
                     when {{ context.grant.scopes.contains(\"c{c}.{g}\") }};"
                )
            }
            2 => format!(
                "@reason(\"large production writes on c{c} are not allowed\")\n\
                 forbid (principal, action == Action::\"c{c}.put{o}\", resource)\n\
                 when {{ resource.env == \"production\" && context.args.amount > {} }};",
                k * 10
            ),
            3 => format!(
                "@reason(\"c{c} writes over {k} need team{t}\")\n@approval(\"group:team{t}\")\n\
                 forbid (principal, action == Action::\"c{c}.put{o}\", resource)\n\
                 when {{ context.args.amount > {k} }}\nunless {{ context.approval.granted }};"
            ),
            _ => format!(
                "@reason(\"team{t} changes c{c} only in office hours\")\n\
                 forbid (principal in Group::\"team{t}\", action in Action::\"c{c}.write\", resource)\n\
                 unless {{ context.time.hour >= 8 && context.time.hour < 18 }};"
            ),
        };
        s.push_str(&format!("@id(\"p{i}\")\n{body}\n"));
    }
    s
}

fn request(rng: &mut StdRng, n: usize) -> anyhow::Result<PolicyRequest> {
    // Aim at a permit of the bundle (so answers are a realistic mix, not all default-deny).
    let i = 5 * rng.random_range(0..n.div_ceil(5).max(1)) + rng.random_range(0..2usize);
    let (c, t) = spread(i.max(1));
    let write = rng.random_bool(0.5);
    let op = format!(
        "c{c}.{}{}",
        if write { "put" } else { "get" },
        rng.random_range(0..OPS)
    );
    let group = if write { "write" } else { "read" };
    let hour = rng.random_range(6..22);
    Ok(serde_json::from_value(json!({
        "principal": {
            "agent": format!("agent-{}", rng.random_range(0..100)),
            "user": format!("user-{}", rng.random_range(0..1000)),
            "groups": [format!("team{t}"), format!("team{}", rng.random_range(0..TEAMS))],
        },
        "action": op,
        "resource": {"type": "Resource", "id": format!("r{}", rng.random_range(0..100)),
                     "attributes": {"env": if rng.random_bool(0.3) { "production" } else { "staging" }}},
        "context": {
            "args": {"amount": rng.random_range(0..20_000)},
            "grant": {"id": "g", "scopes": [format!("c{c}.{group}")], "expires_at": 1_893_456_000},
            "intent": "benchmark",
            "time": format!("2026-05-04T{hour:02}:00:00Z"),
            "approval": {"granted": rng.random_bool(0.1), "approvers": []},
        }
    }))?)
}

fn latency(mut samples: Vec<f64>, total_s: f64) -> Latency {
    let n = samples.len();
    samples.sort_by(f64::total_cmp);
    Latency {
        p50_us: percentile(&samples, 0.5),
        p99_us: percentile(&samples, 0.99),
        per_s: n as f64 / total_s,
    }
}

/// Times `f` on every request, `iterations` passes; returns per-call µs samples and total seconds.
fn time_each<T>(
    requests: &[T],
    iterations: usize,
    mut f: impl FnMut(&T) -> usize,
) -> (Vec<f64>, f64) {
    let mut samples = Vec::with_capacity(requests.len() * iterations);
    let mut sink = 0usize;
    // Warm up caches and the branch predictor on one pass.
    for r in requests {
        sink = sink.wrapping_add(f(r));
    }
    let start = Instant::now();
    for _ in 0..iterations {
        for r in requests {
            let t = Instant::now();
            sink = sink.wrapping_add(f(r));
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let total = start.elapsed().as_secs_f64();
    std::hint::black_box(sink);
    (samples, total)
}

fn bench_size(n: usize, request_count: usize, iterations: usize) -> anyhow::Result<PolicyBenchRow> {
    let bundle = Bundle::from_sources(
        format!("generated-{n}"),
        vec![
            SourceFile {
                path: "bench.cedarschema".into(),
                text: schema(),
            },
            SourceFile {
                path: "bench.cedar".into(),
                text: policies(n),
            },
        ],
    )
    .with_context(|| format!("the generated {n}-policy bundle is invalid"))?;
    anyhow::ensure!(
        bundle.policies().len() == n,
        "generated {} policies, wanted {n}",
        bundle.policies().len()
    );
    let mut rng = StdRng::seed_from_u64(n as u64);
    let requests: Vec<PolicyRequest> = (0..request_count)
        .map(|_| request(&mut rng, n))
        .collect::<anyhow::Result<_>>()?;
    let cedar_requests: Vec<(Request, Entities)> = requests
        .iter()
        .map(|r| bundle.to_cedar(r))
        .collect::<Result<_, _>>()
        .context("a generated request does not fit the generated schema")?;

    let mut mix = VerdictMix::default();
    for (r, e) in &cedar_requests {
        let v = bundle.evaluate_cedar(r, e);
        // The same answer as raw Cedar where Cedar has one (RequireApproval is a Cedar Deny).
        let cedar = Authorizer::new().is_authorized(r, bundle.policy_set(), e);
        anyhow::ensure!(
            v.is_allow() == (cedar.decision() == cedar_policy::Decision::Allow),
            "Writ and Cedar disagree on a request: {v}"
        );
        match v.kind() {
            writ_policy::VerdictKind::Allow => mix.allow += 1,
            writ_policy::VerdictKind::Deny => mix.deny += 1,
            writ_policy::VerdictKind::RequireApproval => mix.require_approval += 1,
        }
    }

    let authorizer = Authorizer::new();
    let set = bundle.policy_set();
    let (cedar_samples, cedar_total) = time_each(&cedar_requests, iterations, |(r, e)| {
        authorizer
            .is_authorized(r, set, e)
            .diagnostics()
            .reason()
            .count()
    });
    let (writ_samples, writ_total) = time_each(&cedar_requests, iterations, |(r, e)| {
        bundle
            .evaluate_cedar(r, e)
            .explanation()
            .determining_policies
            .len()
    });
    let (e2e_samples, e2e_total) = time_each(&requests, iterations, |r| {
        bundle.evaluate(r).explanation().determining_policies.len()
    });
    let cedar = latency(cedar_samples, cedar_total);
    let writ = latency(writ_samples, writ_total);
    Ok(PolicyBenchRow {
        policies: n,
        mean_action_slice: bundle.slice_stats().mean_action_slice,
        ratio_p50: writ.p50_us / cedar.p50_us,
        ratio_p99: writ.p99_us / cedar.p99_us,
        cedar,
        writ,
        writ_end_to_end: latency(e2e_samples, e2e_total),
        verdicts: mix,
    })
}

pub fn run(
    sizes: &[usize],
    request_count: usize,
    iterations: usize,
    global: &Global,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        request_count > 0 && iterations > 0,
        "--requests and --iterations must be at least 1"
    );
    let mut rows = Vec::with_capacity(sizes.len());
    for &n in sizes {
        anyhow::ensure!(n >= 1, "a bundle size must be at least 1 policy");
        if !global.json {
            eprintln!("measuring {n} policies ...");
        }
        rows.push(bench_size(n, request_count, iterations)?);
    }
    let report = PolicyBenchReport {
        machine: machine_description(),
        requests: request_count,
        iterations,
        rows,
    };
    if global.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    Ok(())
}

fn print(r: &PolicyBenchReport) {
    println!("machine: {}", r.machine);
    println!(
        "{} distinct requests x {} passes per size, one thread; latency in µs\n",
        r.requests, r.iterations
    );
    println!(
        "| policies | mean slice | Cedar p50 | Cedar p99 | Cedar /s | Writ p50 | Writ p99 | Writ /s | Writ/Cedar p50 | Writ/Cedar p99 | Writ end-to-end p50 | allow/deny/approval |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for row in &r.rows {
        println!(
            "| {} | {:.1} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2}x | {:.2}x | {:.2} | {}/{}/{} |",
            row.policies,
            row.mean_action_slice,
            row.cedar.p50_us,
            row.cedar.p99_us,
            row.cedar.per_s,
            row.writ.p50_us,
            row.writ.p99_us,
            row.writ.per_s,
            row.ratio_p50,
            row.ratio_p99,
            row.writ_end_to_end.p50_us,
            row.verdicts.allow,
            row.verdicts.deny,
            row.verdicts.require_approval,
        );
    }
}
