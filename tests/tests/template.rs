//! The SAM template, checked against the code: queues, timeouts, partial
//! batch responses, least privilege, encryption, and the environment each
//! function gets versus what its binary reads.

use std::collections::BTreeSet;

use serde_norway::Value;
use shared::config::{
    Component, IngestConfig, JanitorConfig, PlannerConfig, Reader, ServeConfig, ALL,
};

fn template() -> Value {
    serde_norway::from_str(include_str!("../../infra/template.yaml")).expect("template parses")
}

fn resources(t: &Value) -> Vec<(String, Value)> {
    t["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), v.clone()))
        .collect()
}

fn of_type(t: &Value, ty: &str) -> Vec<(String, Value)> {
    resources(t)
        .into_iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(ty))
        .collect()
}

/// The logical id a `!GetAtt X.Arn` or `!Ref X` points at.
fn target(v: &Value) -> Option<String> {
    match v {
        Value::Tagged(t) if t.tag == "GetAtt" => t
            .value
            .as_str()
            .map(|s| s.split('.').next().unwrap().to_string()),
        Value::Tagged(t) if t.tag == "Ref" => t.value.as_str().map(str::to_string),
        _ => None,
    }
}

fn number(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {v:?}"))
}

#[test]
fn every_queue_has_a_dead_letter_queue_and_sse() {
    let t = template();
    let queues = of_type(&t, "AWS::SQS::Queue");
    let dlqs: BTreeSet<String> = queues
        .iter()
        .filter_map(|(_, q)| target(&q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]))
        .collect();
    assert_eq!(dlqs.len(), 2);
    for (id, q) in &queues {
        let p = &q["Properties"];
        assert_eq!(p["SqsManagedSseEnabled"].as_bool(), Some(true), "{id}: SSE");
        if dlqs.contains(id) {
            assert_eq!(
                number(&p["MessageRetentionPeriod"]),
                14 * 24 * 3600,
                "{id}: DLQ keeps messages 14 days"
            );
        } else {
            assert!(
                target(&p["RedrivePolicy"]["deadLetterTargetArn"]).is_some(),
                "{id} has a DLQ"
            );
            assert!(
                p["RedrivePolicy"]["maxReceiveCount"].is_tagged(),
                "{id}: maxReceiveCount is a parameter"
            );
        }
    }
}

trait Tagged {
    fn is_tagged(&self) -> bool;
}
impl Tagged for Value {
    fn is_tagged(&self) -> bool {
        matches!(self, Value::Tagged(_))
    }
}

#[test]
fn visibility_timeouts_cover_six_function_timeouts_and_batches_fail_partially() {
    let t = template();
    let mut mappings = 0;
    for (id, f) in of_type(&t, "AWS::Serverless::Function") {
        let timeout = number(&f["Properties"]["Timeout"]);
        let Some(events) = f["Properties"]["Events"].as_mapping() else {
            continue;
        };
        for (_, e) in events {
            if e["Type"].as_str() != Some("SQS") {
                continue;
            }
            mappings += 1;
            let queue = target(&e["Properties"]["Queue"]).unwrap();
            let vt = number(&t["Resources"][queue.as_str()]["Properties"]["VisibilityTimeout"]);
            assert!(
                vt >= 6 * timeout,
                "{id}: {queue} visibility {vt} < 6 x {timeout}"
            );
            let types: Vec<&str> = e["Properties"]["FunctionResponseTypes"]
                .as_sequence()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(types, vec!["ReportBatchItemFailures"], "{id}");
        }
    }
    assert_eq!(mappings, 2);
    let chunks = &t["Resources"]["IngestFunction"]["Properties"]["Events"]["Chunks"]["Properties"];
    assert!(
        chunks["ScalingConfig"]["MaximumConcurrency"].is_tagged()
            && chunks["BatchSize"].is_tagged()
    );
}

#[test]
fn roles_grant_only_what_each_function_needs() {
    let t = template();
    let eni: BTreeSet<&str> = [
        "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
    ]
    .into();
    let mut granted: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for (id, role) in of_type(&t, "AWS::IAM::Role") {
        assert!(
            role["Properties"]["ManagedPolicyArns"].is_null(),
            "{id}: no managed policies"
        );
        for policy in role["Properties"]["Policies"].as_sequence().unwrap() {
            for s in policy["PolicyDocument"]["Statement"].as_sequence().unwrap() {
                assert_eq!(s["Effect"].as_str(), Some("Allow"));
                let actions: Vec<String> = match &s["Action"] {
                    Value::String(a) => vec![a.clone()],
                    Value::Sequence(a) => {
                        a.iter().map(|x| x.as_str().unwrap().to_string()).collect()
                    }
                    other => panic!("{id}: action {other:?}"),
                };
                for a in &actions {
                    assert!(!a.contains('*'), "{id}: wildcard action {a}");
                }
                if s["Resource"].as_str() == Some("*") {
                    assert!(
                        actions.iter().all(|a| eni.contains(a.as_str())),
                        "{id}: `*` resource only for network interfaces: {actions:?}"
                    );
                }
                granted.entry(id.clone()).or_default().extend(actions);
            }
        }
    }
    let non_vpc = |id: &str| -> BTreeSet<String> {
        granted[id]
            .iter()
            .filter(|a| !a.starts_with("ec2:") && !a.starts_with("logs:"))
            .cloned()
            .collect()
    };
    let set = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| s.to_string()).collect() };
    let poll = [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ChangeMessageVisibility",
    ];
    // The planner lists folder batches (and S3 answers 404 for a missing file only with ListBucket).
    let mut planner = set(&[
        "s3:GetObject",
        "s3:ListBucket",
        "sqs:SendMessage",
        "secretsmanager:GetSecretValue",
    ]);
    planner.extend(set(&poll));
    let mut ingest = set(&["s3:GetObject", "secretsmanager:GetSecretValue"]);
    ingest.extend(set(&poll));
    assert_eq!(non_vpc("PlannerRole"), planner);
    assert_eq!(non_vpc("IngestRole"), ingest);
    assert_eq!(
        non_vpc("ServeRole"),
        set(&["secretsmanager:GetSecretValue"])
    );
}

#[test]
fn ended_sagemaker_transform_jobs_reach_the_events_queue_when_a_prefix_is_set() {
    let t = template();
    let rules = of_type(&t, "AWS::Events::Rule");
    assert_eq!(rules.len(), 1);
    let (id, rule) = &rules[0];
    assert_eq!(
        rule["Condition"].as_str(),
        Some("HasTransformJobs"),
        "{id}: only with TransformJobPrefix"
    );
    let pattern = &rule["Properties"]["EventPattern"];
    assert_eq!(pattern["source"][0].as_str(), Some("aws.sagemaker"));
    assert_eq!(
        pattern["detail-type"][0].as_str(),
        Some(ingest::s3::event::TRANSFORM_JOB_STATE_CHANGE)
    );
    let statuses: Vec<&str> = pattern["detail"]["TransformJobStatus"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert_eq!(statuses, ["Completed", "Failed", "Stopped"]);
    assert_eq!(
        target(&pattern["detail"]["TransformJobName"][0]["prefix"]).as_deref(),
        Some("TransformJobPrefix")
    );
    assert_eq!(
        target(&rule["Properties"]["Targets"][0]["Arn"]).as_deref(),
        Some("EventsQueue")
    );
    // The queue lets EventBridge send, from that rule only.
    let policy = serde_norway::to_string(&t["Resources"]["EventsQueuePolicy"]).unwrap();
    assert!(
        policy.contains("events.amazonaws.com") && policy.contains("TransformJobsRule.Arn"),
        "{policy}"
    );
}

#[test]
fn redis_is_encrypted_authenticated_and_highly_available() {
    let t = template();
    let rg = &t["Resources"]["Redis"]["Properties"];
    for flag in [
        "TransitEncryptionEnabled",
        "AtRestEncryptionEnabled",
        "AutomaticFailoverEnabled",
        "MultiAZEnabled",
    ] {
        assert_eq!(rg[flag].as_bool(), Some(true), "{flag}");
    }
    assert!(
        rg["AuthToken"].is_null(),
        "one user per role, not one token"
    );
    assert_eq!(
        target(&rg["UserGroupIds"][0]).as_deref(),
        Some("RedisUsers")
    );
    let params = &t["Resources"]["RedisParameters"]["Properties"]["Properties"];
    assert_eq!(params["cluster-enabled"].as_str(), Some("yes"));
}

#[test]
fn each_function_gets_exactly_the_variables_its_binary_reads() {
    let t = template();
    for (id, vars) in [
        ("PlannerFunction", PlannerConfig::vars()),
        ("IngestFunction", IngestConfig::vars()),
        ("ServeFunction", ServeConfig::vars()),
        ("JanitorFunction", JanitorConfig::vars()),
    ] {
        let got: BTreeSet<String> = t["Resources"][id]["Properties"]["Environment"]["Variables"]
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        let local_only = |name: &str| ALL.iter().any(|v| v.name == name && v.local_only);
        let want: BTreeSet<String> = vars
            .iter()
            .filter(|v| !local_only(v))
            .map(|v| v.to_string())
            .collect();
        assert_eq!(got, want, "{id}");
        let f = &t["Resources"][id];
        assert_eq!(
            f["Metadata"]["BuildMethod"].as_str(),
            Some("rust-cargolambda")
        );
    }
    assert_eq!(
        t["Globals"]["Function"]["Runtime"].as_str(),
        Some("provided.al2023")
    );
    assert_eq!(
        t["Parameters"]["Architecture"]["Default"].as_str(),
        Some("arm64")
    );
}

#[test]
fn the_bucket_is_private_encrypted_tls_only_and_notifies_the_events_queue() {
    let t = template();
    let b = &t["Resources"]["BatchBucket"]["Properties"];
    for flag in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(
            b["PublicAccessBlockConfiguration"][flag].as_bool(),
            Some(true),
            "{flag}"
        );
    }
    assert!(!b["BucketEncryption"].is_null());
    let q = &b["NotificationConfiguration"]["QueueConfigurations"][0];
    assert_eq!(q["Event"].as_str(), Some("s3:ObjectCreated:*"));
    assert_eq!(target(&q["Queue"]).as_deref(), Some("EventsQueue"));
    let deny = &t["Resources"]["BatchBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0];
    assert_eq!(deny["Effect"].as_str(), Some("Deny"));
    assert_eq!(
        deny["Condition"]["Bool"]["aws:SecureTransport"].as_str(),
        Some("false")
    );
    let routes: BTreeSet<String> = of_type(&t, "AWS::ApiGatewayV2::Route")
        .iter()
        .map(|(_, r)| r["Properties"]["RouteKey"].as_str().unwrap().to_string())
        .collect();
    // Every operation of the OpenAPI document has a route, a path variable
    // standing for any one segment; and no route is undocumented.
    let doc: serde_json::Value = serde_json::from_str(serve::api::OPENAPI).unwrap();
    let matches = |route: &str, op: &str| {
        let (rm, rp) = route.split_once(' ').unwrap();
        let (om, op) = op.split_once(' ').unwrap();
        let (rs, os): (Vec<&str>, Vec<&str>) = (rp.split('/').collect(), op.split('/').collect());
        rm == om
            && rs.len() == os.len()
            && rs
                .iter()
                .zip(&os)
                .all(|(r, o)| r == o || (r.starts_with('{') && !o.is_empty()))
    };
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    assert_eq!(operations.len(), 5, "{operations:?}");
    for op in &operations {
        assert!(
            routes.iter().any(|r| matches(r, op)),
            "no route for {op} in {routes:?}"
        );
    }
    for route in &routes {
        assert!(
            operations.iter().any(|op| matches(route, op)),
            "route {route} is not in the OpenAPI document"
        );
    }
}

/// The README's configuration table as the declarations make it: one row
/// per variable, with its default, who reads it and what it means.
fn configuration_table() -> String {
    let mut out = String::from("| variable | default | used by | meaning |\n|---|---|---|---|\n");
    for v in ALL {
        let default = match v.default {
            // A `|` would end the table's cell.
            Some(d) => format!("`{}`", d.replace('|', "\\|")),
            None => "—".to_string(),
        };
        let mut used_by = if v.readers.len() == 5 {
            "all".to_string()
        } else if v.readers == Reader::LAMBDAS {
            "Lambdas".to_string()
        } else {
            v.readers
                .iter()
                .map(|r| r.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if v.local_only {
            used_by.push_str(" (local)");
        }
        out.push_str(&format!(
            "| `{}` | {default} | {used_by} | {} |\n",
            v.name,
            v.doc.trim()
        ));
    }
    out
}

#[test]
fn the_readme_configuration_table_is_the_declared_one() {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("| variable | default | used by | meaning |")
        .expect("the README has a configuration table");
    let end = readme[start..]
        .find("\n\n")
        .map_or(readme.len(), |e| start + e + 1);
    let want = configuration_table();
    assert!(
        readme[start..end] == want,
        "the README's configuration table differs from the declarations; it should read:\n{want}"
    );
}

#[test]
fn the_janitor_runs_on_a_schedule_and_the_stale_alarm_watches_the_live_age() {
    let t = template();
    let j = &t["Resources"]["JanitorFunction"];
    assert_eq!(
        j["Metadata"]["BuildProperties"]["Binary"].as_str(),
        Some("janitor")
    );
    let events = j["Properties"]["Events"].as_mapping().unwrap();
    assert!(events
        .values()
        .any(|e| e["Type"].as_str() == Some("ScheduleV2")
            && e["Properties"]["ScheduleExpression"]
                .as_str()
                .is_some_and(|x| x.starts_with("rate("))));
    let alarm = &t["Resources"]["StaleLiveVersionAlarm"]["Properties"];
    let metrics = alarm["Metrics"].as_sequence().unwrap();
    assert!(
        metrics
            .iter()
            .any(|m| m["MetricStat"]["Metric"]["MetricName"].as_str()
                == Some("LiveVersionAgeSeconds"))
    );
    assert_eq!(
        t["Resources"]["RedisParameters"]["Properties"]["Properties"]["maxmemory-policy"].as_str(),
        Some("noeviction")
    );
}

/// An intrinsic's tag and value (`!If [...]` → ("If", [...])).
fn tagged(v: &Value) -> (String, Value) {
    match v {
        Value::Tagged(t) => (
            t.tag.to_string().trim_start_matches('!').to_string(),
            t.value.clone(),
        ),
        other => panic!("not an intrinsic: {other:?}"),
    }
}

#[test]
fn every_route_takes_the_api_auth_authorizer_and_iam_is_the_default() {
    let t = template();
    let p = &t["Parameters"]["ApiAuth"];
    assert_eq!(p["Default"].as_str(), Some("AWS_IAM"));
    let allowed: BTreeSet<&str> = p["AllowedValues"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(allowed, ["AWS_IAM", "JWT", "NONE"].into());
    let conditions = &t["Conditions"];
    for (name, value) in [
        ("ApiIam", "AWS_IAM"),
        ("ApiJwt", "JWT"),
        ("ApiOpen", "NONE"),
    ] {
        let (tag, args) = tagged(&conditions[name]);
        assert_eq!(tag, "Equals");
        assert_eq!(target(&args[0]).as_deref(), Some("ApiAuth"));
        assert_eq!(args[1].as_str(), Some(value), "{name}");
    }
    let routes = of_type(&t, "AWS::ApiGatewayV2::Route");
    assert_eq!(routes.len(), 5);
    for (id, r) in &routes {
        // AWS_IAM under ApiIam, JWT (with the authorizer) under ApiJwt, NONE otherwise.
        let (tag, args) = tagged(&r["Properties"]["AuthorizationType"]);
        assert_eq!(
            (tag.as_str(), args[0].as_str(), args[1].as_str()),
            ("If", Some("ApiIam"), Some("AWS_IAM")),
            "{id}"
        );
        let (tag, inner) = tagged(&args[2]);
        assert_eq!(
            (
                tag.as_str(),
                inner[0].as_str(),
                inner[1].as_str(),
                inner[2].as_str()
            ),
            ("If", Some("ApiJwt"), Some("JWT"), Some("NONE")),
            "{id}"
        );
        let (tag, args) = tagged(&r["Properties"]["AuthorizerId"]);
        assert_eq!(
            (tag.as_str(), args[0].as_str()),
            ("If", Some("ApiJwt")),
            "{id}"
        );
        assert_eq!(
            target(&args[1]).as_deref(),
            Some("ApiJwtAuthorizer"),
            "{id}"
        );
    }
    let jwt = &t["Resources"]["ApiJwtAuthorizer"]["Properties"];
    assert_eq!(jwt["AuthorizerType"].as_str(), Some("JWT"));
    assert_eq!(
        target(&jwt["JwtConfiguration"]["Issuer"]).as_deref(),
        Some("JwtIssuer")
    );
    assert_eq!(
        target(&jwt["JwtConfiguration"]["Audience"][0]).as_deref(),
        Some("JwtAudience")
    );
    // Serve checks the user claim only behind the JWT authorizer.
    let (tag, args) = tagged(
        &t["Resources"]["ServeFunction"]["Properties"]["Environment"]["Variables"]["FS_USER_CLAIM"],
    );
    assert_eq!((tag.as_str(), args[0].as_str()), ("If", Some("ApiJwt")));
    assert_eq!(target(&args[1]).as_deref(), Some("JwtUserClaim"));
    // An open API says so in the outputs.
    let open = &t["Outputs"]["ApiIsOpen"];
    assert_eq!(open["Condition"].as_str(), Some("ApiOpen"));
    assert!(open["Description"].as_str().unwrap().contains("WARNING"));

    // Batch routes are throttled by their own (lower) parameters.
    let stage = &t["Resources"]["ApiStage"]["Properties"];
    for route in ["GET /v1/{dataset}/users", "POST /v1/{dataset}/{action}"] {
        let settings = &stage["RouteSettings"][route];
        assert_eq!(
            target(&settings["ThrottlingRateLimit"]).as_deref(),
            Some("ApiBatchThrottleRate"),
            "{route}"
        );
        assert_eq!(
            target(&settings["ThrottlingBurstLimit"]).as_deref(),
            Some("ApiBatchThrottleBurst"),
            "{route}"
        );
    }
    assert_eq!(
        target(&stage["DefaultRouteSettings"]["ThrottlingRateLimit"]).as_deref(),
        Some("ApiThrottleRate")
    );
    assert!(
        number(&t["Parameters"]["ApiBatchThrottleRate"]["Default"])
            < number(&t["Parameters"]["ApiThrottleRate"]["Default"])
    );
    // Access logs: caller, route, status, latency; never the path (user ids).
    let format = stage["AccessLogSettings"]["Format"].as_str().unwrap();
    for field in [
        "$context.identity.caller",
        "$context.routeKey",
        "$context.status",
        "$context.responseLatency",
    ] {
        assert!(format.contains(field), "access log lacks {field}");
    }
    assert!(!format.contains("$context.path") && !format.contains("$context.http.path"));
    assert_eq!(
        target(&stage["AccessLogSettings"]["DestinationArn"]).as_deref(),
        Some("ApiAccessLogs")
    );
    // What one caller can cost: serve's concurrency and the planner's.
    assert_eq!(
        target(&t["Resources"]["ServeFunction"]["Properties"]["ReservedConcurrentExecutions"])
            .as_deref(),
        Some("ServeReservedConcurrency")
    );
    let uploads =
        &t["Resources"]["PlannerFunction"]["Properties"]["Events"]["Uploads"]["Properties"];
    assert_eq!(
        target(&uploads["ScalingConfig"]["MaximumConcurrency"]).as_deref(),
        Some("PlannerMaxConcurrency")
    );
}

#[test]
fn alarms_reach_the_topic_through_a_key_cloudwatch_may_use() {
    let t = template();
    let topic = &t["Resources"]["AlarmTopic"]["Properties"];
    assert_eq!(
        target(&topic["KmsMasterKeyId"]).as_deref(),
        Some("AlarmTopicKey"),
        "not the aws/sns key, which CloudWatch cannot use"
    );
    let key = &t["Resources"]["AlarmTopicKey"];
    assert_eq!(key["Type"].as_str(), Some("AWS::KMS::Key"));
    assert_eq!(key["Properties"]["EnableKeyRotation"].as_bool(), Some(true));
    let statements = key["Properties"]["KeyPolicy"]["Statement"]
        .as_sequence()
        .unwrap();
    let cw = statements
        .iter()
        .find(|s| s["Principal"]["Service"].as_str() == Some("cloudwatch.amazonaws.com"))
        .expect("the key policy names CloudWatch");
    assert_eq!(cw["Effect"].as_str(), Some("Allow"));
    let actions: BTreeSet<&str> = cw["Action"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        actions.contains("kms:Decrypt") && actions.contains("kms:GenerateDataKey*"),
        "{actions:?}"
    );
    // Every alarm notifies the topic.
    for (id, alarm) in of_type(&t, "AWS::CloudWatch::Alarm") {
        assert_eq!(
            target(&alarm["Properties"]["AlarmActions"][0]).as_deref(),
            Some("AlarmTopic"),
            "{id}"
        );
    }
}

#[test]
fn functions_reach_only_redis_the_endpoints_and_s3() {
    let t = template();
    let sg = &t["Resources"]["FunctionSecurityGroup"]["Properties"];
    let inline = sg["SecurityGroupEgress"].as_sequence().unwrap();
    assert_eq!(inline.len(), 1);
    assert_eq!(
        target(&inline[0]["DestinationPrefixListId"]).as_deref(),
        Some("S3PrefixListId")
    );
    let mut egress = BTreeSet::new();
    for (_, r) in of_type(&t, "AWS::EC2::SecurityGroupEgress") {
        let p = &r["Properties"];
        assert_eq!(
            target(&p["GroupId"]).as_deref(),
            Some("FunctionSecurityGroup")
        );
        egress.insert((
            number(&p["FromPort"]),
            target(&p["DestinationSecurityGroupId"]).unwrap(),
        ));
    }
    assert_eq!(
        egress,
        [
            (443, "EndpointSecurityGroup".to_string()),
            (6379, "RedisSecurityGroup".to_string())
        ]
        .into()
    );
    let text = serde_norway::to_string(&t["Resources"]).unwrap();
    assert!(!text.contains("0.0.0.0/0"), "no rule opens to the internet");
    for id in ["RedisSecurityGroup", "EndpointSecurityGroup"] {
        let ingress = t["Resources"][id]["Properties"]["SecurityGroupIngress"]
            .as_sequence()
            .unwrap();
        assert!(
            ingress
                .iter()
                .all(|r| target(&r["SourceSecurityGroupId"]).as_deref()
                    == Some("FunctionSecurityGroup")),
            "{id}"
        );
        assert_eq!(
            t["Resources"][id]["Properties"]["SecurityGroupEgress"][0]["CidrIp"].as_str(),
            Some("127.0.0.1/32"),
            "{id} sends nowhere"
        );
    }
    for (_, r) in of_type(&t, "AWS::EC2::SecurityGroupIngress") {
        assert_eq!(
            target(&r["Properties"]["SourceSecurityGroupId"]).as_deref(),
            Some("OperatorSecurityGroupId")
        );
        assert_eq!(r["Condition"].as_str(), Some("HasOperator"));
    }
    // Each endpoint lets through only the stack's own resources.
    for id in ["S3Endpoint", "SqsEndpoint", "SecretsEndpoint"] {
        let statements = t["Resources"][id]["Properties"]["PolicyDocument"]["Statement"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{id} has a policy"));
        for s in statements {
            let r = serde_norway::to_string(&s["Resource"]).unwrap();
            assert!(!r.contains("'*'") && !r.contains("\"*\""), "{id}: {r}");
        }
    }
}

#[test]
fn batch_files_are_versioned_expire_and_may_be_put_only_by_uploaders() {
    let t = template();
    let b = &t["Resources"]["BatchBucket"]["Properties"];
    assert_eq!(
        b["VersioningConfiguration"]["Status"].as_str(),
        Some("Enabled")
    );
    let rule = &b["LifecycleConfiguration"]["Rules"][0];
    assert_eq!(
        target(&rule["ExpirationInDays"]).as_deref(),
        Some("BatchRetentionDays")
    );
    assert!(number(&rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]) >= 1);
    // Batch files outlive a dead-lettered chunk's 14 days.
    assert!(number(&t["Parameters"]["BatchRetentionDays"]["MinValue"]) > 14);
    let policy = serde_norway::to_string(&t["Resources"]["BatchBucketPolicy"]).unwrap();
    assert!(policy.contains("OnlyUploadersPut") && policy.contains("UploaderPrincipalArns"));
}

#[test]
fn each_role_has_its_own_redis_user_with_the_local_stacks_access_string() {
    let t = template();
    let file = include_str!("../../infra/redis-users.acl");
    let local: std::collections::BTreeMap<&str, &str> = file
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once(' ').unwrap())
        .collect();
    let users = of_type(&t, "AWS::ElastiCache::User");
    let mut seen = BTreeSet::new();
    for (id, u) in &users {
        let p = &u["Properties"];
        let name = p["UserName"].as_str().unwrap();
        let access = p["AccessString"].as_str().unwrap();
        if name == "default" {
            assert!(
                access.starts_with("off"),
                "the default user is off: {access}"
            );
            continue;
        }
        assert_eq!(
            Some(&access),
            local.get(name),
            "{id}: the template's access string is the local stack's"
        );
        assert_eq!(
            p["AuthenticationMode"]["Type"].as_str(),
            Some("password"),
            "{id}"
        );
        seen.insert(name.to_string());
    }
    assert_eq!(
        seen,
        ["fs-operator", "fs-serve", "fs-writer"]
            .map(String::from)
            .into()
    );
    // Serve's user has no write, script or admin command.
    let serve = local["fs-serve"];
    for cmd in [
        "+set",
        "+del",
        "+eval",
        "+@write",
        "+@scripting",
        "+@all",
        "+@admin",
        "+hset",
        "+unlink",
    ] {
        assert!(!serve.split(' ').any(|r| r == cmd), "fs-serve has {cmd}");
    }
    // Each function reads its own role's password, and only that one.
    let secret_of = |f: &str| {
        target(
            &t["Resources"][f]["Properties"]["Environment"]["Variables"]
                ["FS_REDIS_AUTH_SECRET_ARN"],
        )
        .unwrap()
    };
    assert_eq!(secret_of("ServeFunction"), "RedisServeSecret");
    for f in ["PlannerFunction", "IngestFunction", "JanitorFunction"] {
        assert_eq!(secret_of(f), "RedisWriterSecret", "{f}");
    }
    let serve_role = serde_norway::to_string(&t["Resources"]["ServeRole"]).unwrap();
    assert!(serve_role.contains("RedisServeSecret") && !serve_role.contains("RedisWriterSecret"));
}
