//! The default agents with an LLM: Alpha plans with it (and falls back to
//! its rules on an unusable answer), Beta carries out actions it has no
//! handler for, Gamma records a second opinion. Without an LLM they behave
//! as before.

use orrery::llm::LlmConfig;
use orrery::report::{RunReport, TaskStatus};
use serde_json::{Value, json};
use wiremock::{MockServer, ResponseTemplate};

use crate::util::*;

async fn run_deploy(server: &MockServer) -> RunReport {
    run_with_llm(&default_scripts(), deploy_task(), live_config(server)).await
}

#[tokio::test]
async fn alpha_plans_with_a_valid_llm_plan_and_gamma_gives_a_second_opinion() {
    let plan = json!({"steps": [
        {"id": "s1", "action": "analyze", "description": "Look at the service", "owner": "beta"},
        {"id": "s2", "action": "deploy", "description": "Roll it out"},
        {"id": "s3", "action": "verify", "description": "Check it answers"}
    ]});
    let review = json!({"agree": false, "concerns": ["no build step"]});
    let server = agents_server(plan_answer(plan), "unused", review).await;
    let report = run_deploy(&server).await;
    assert_eq!(report.status, TaskStatus::Complete, "{:#?}", report.errors);

    assert_eq!(
        output(&report, "plan"),
        &json!({"source": "llm", "model": "m/planner", "steps": 3})
    );
    let steps = output(&report, "plan_steps");
    assert_eq!(steps[0]["owner"], "beta", "extra step fields are kept");
    let ids: Vec<&str> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["s1", "s2", "s3"]);
    assert_eq!(
        output(&report, "execution"),
        &json!({"steps": 3, "done": 3, "failed": 0})
    );

    let validation = output(&report, "validation");
    assert_eq!(
        validation["passed"], true,
        "the opinion is advice: {validation}"
    );
    assert_eq!(
        validation["second_opinion"],
        json!({"agree": false, "concerns": ["no build step"], "model": "m/review", "source": "api"})
    );

    // What the planner was asked: JSON, temperature 0, and the task in full.
    let requests = server.received_requests().await.unwrap();
    let planner: Value = requests
        .iter()
        .map(|r| r.body_json::<Value>().unwrap())
        .find(|b| b.to_string().contains("You are the planner"))
        .expect("the planner asked");
    assert_eq!(planner["response_format"], json!({"type": "json_object"}));
    assert_eq!(planner["temperature"], 0.0);
    let question = planner["messages"][1]["content"].as_str().unwrap();
    for part in [
        "id: deploy-001",
        "type: deployment",
        "\"sandbox-only\"",
        "\"service\":\"web\"",
        "\"port\":8080",
    ] {
        assert!(question.contains(part), "{part:?} missing from {question}");
    }
    let by_agent = &serde_json::to_value(&report.metrics).unwrap()["llm"]["per_agent"];
    assert_eq!(by_agent["alpha-1"]["total"]["total_tokens"], 150);
    assert_eq!(by_agent["gamma-1"]["total"]["total_tokens"], 35);
    assert!(by_agent.get("beta-1").is_none(), "beta knew every action");
}

/// Beta's deploy ships the image its plan built, whatever the build step's id
/// or position: an LLM plan that builds as step-3 (step-2 being configure)
/// once deployed an "unknown" image.
#[tokio::test]
async fn beta_deploys_what_the_plan_built_wherever_the_build_step_is() {
    let plan = json!({"steps": [
        {"id": "step-1", "action": "analyze", "description": "Look at the service"},
        {"id": "step-2", "action": "configure", "description": "Render the config"},
        {"id": "step-3", "action": "build", "description": "Build the image"},
        {"id": "ship", "action": "deploy", "description": "Roll it out"},
        {"id": "step-5", "action": "verify", "description": "Check it answers"}
    ]});
    let review = json!({"agree": true, "concerns": []});
    let server = agents_server(plan_answer(plan), "unused", review).await;
    let report = run_deploy(&server).await;
    assert_eq!(report.status, TaskStatus::Complete, "{:#?}", report.errors);
    assert_eq!(output(&report, "plan")["source"], "llm");
    let deployment = output(&report, "deployment");
    assert_eq!(deployment["image"], "web:1.4.2", "{deployment}");
}

#[tokio::test]
async fn alpha_falls_back_to_its_rules_on_an_unusable_plan() {
    let cases = [
        (
            ResponseTemplate::new(200).set_body_json(completion(
                "Sure! Step one: analyze.",
                "m",
                10,
                10,
            )),
            "the answer is not JSON",
        ),
        (
            plan_answer(json!({"steps": [{"id": "s1", "action": "analyze"}]})),
            "the LLM's plan is invalid: step 1 has no string 'description'",
        ),
        (
            plan_answer(json!({"plan": []})),
            "the LLM's plan is invalid: plan has no steps list",
        ),
        (
            ResponseTemplate::new(500).set_body_string("overloaded"),
            "the LLM call failed (http): LLM endpoint",
        ),
    ];
    for (answer, reason) in cases {
        let server = agents_server(answer, "unused", json!({"agree": true, "concerns": []})).await;
        let report = run_deploy(&server).await;
        assert_eq!(
            report.status,
            TaskStatus::Complete,
            "{reason}: {:#?}",
            report.errors
        );
        let plan = output(&report, "plan");
        assert_eq!(plan["source"], "fallback", "{plan}");
        assert_eq!(plan["steps"], 5, "the rule-based deployment plan: {plan}");
        let got = plan["reason"].as_str().unwrap();
        assert!(got.starts_with(reason), "{got:?} should start {reason:?}");
        assert_eq!(output(&report, "execution")["done"], 5);
    }
}

#[tokio::test]
async fn beta_asks_the_llm_to_carry_out_an_action_it_has_no_handler_for() {
    let plan = json!({"steps": [
        {"id": "s1", "action": "analyze", "description": "Collect the changes"},
        {"id": "s2", "action": "write_notes", "description": "Write the release notes"}
    ]});
    let server = agents_server(
        plan_answer(plan),
        "web 1.4.2: faster health checks",
        json!({"agree": true}),
    )
    .await;
    let report = run_deploy(&server).await;
    assert_eq!(report.status, TaskStatus::Complete, "{:#?}", report.errors);
    assert_eq!(
        output(&report, "s2.write_notes"),
        &json!({"answer": "web 1.4.2: faster health checks", "model": "m/exec", "source": "api"})
    );
    assert_eq!(
        output(&report, "execution"),
        &json!({"steps": 2, "done": 2, "failed": 0})
    );
    let asked = server.received_requests().await.unwrap();
    let executor = asked
        .iter()
        .map(|r| r.body_json::<Value>().unwrap())
        .find(|b| b.to_string().contains("You are the executor"))
        .unwrap();
    let question = executor["messages"][1]["content"].as_str().unwrap();
    assert!(
        question.contains("s2, action 'write_notes': Write the release notes"),
        "{question}"
    );
    assert!(
        question.contains("\"version\":\"1.4.2\""),
        "the task's inputs: {question}"
    );
    assert!(
        executor.get("response_format").is_none(),
        "a plain-text answer"
    );
}

#[tokio::test]
async fn without_an_llm_an_unknown_action_fails_its_step_clearly() {
    let beta = std::fs::read_to_string(default_scripts().join("beta.lua")).unwrap();
    let alpha = r#"
      return {
        start = function()
          bus.send("beta", "step_ready", { step = { id = "s1", action = "write_notes", description = "d" }, index = 1, total = 1 })
          bus.send("beta", "plan_complete", { total = 1 })
        end,
        on_message = function(_, msg)
          if msg.type == "step_failed" then task.output("failure", msg.payload.error) end
          agent.finish()
        end,
      }"#;
    let scripts = Scratch::new(&[("alpha.lua", alpha), ("beta.lua", &beta)]);
    let report = run_with_llm(
        &scripts.scripts(),
        task("unknown-action", 10_000),
        LlmConfig::default(),
    )
    .await;
    assert_eq!(
        output(&report, "failure"),
        "no action 'write_notes' in beta.lua, and no LLM is configured to carry it out (see --llm-url, --llm-replay)"
    );
    assert_eq!(
        output(&report, "execution"),
        &json!({"steps": 1, "done": 0, "failed": 1})
    );
}

#[tokio::test]
async fn without_an_llm_the_default_agents_plan_by_their_rules() {
    let report = run_with_llm(&default_scripts(), deploy_task(), LlmConfig::default()).await;
    assert_eq!(report.status, TaskStatus::Complete, "{:#?}", report.errors);
    assert_eq!(
        output(&report, "plan"),
        &json!({"source": "rules", "steps": 5})
    );
    assert!(
        output(&report, "validation")
            .get("second_opinion")
            .is_none()
    );
    assert_eq!(report.metrics.llm.task.total.calls, 0);
    assert_eq!(report.metrics.llm.task.failed_calls, 0);
}

#[tokio::test]
async fn the_plan_request_names_the_configured_model() {
    let server = agents_server(
        plan_answer(json!({"steps": [{"id": "a", "action": "analyze", "description": "d"}]})),
        "unused",
        json!({"agree": true}),
    )
    .await;
    let report = run_with_llm(
        &default_scripts(),
        deploy_task(),
        LlmConfig {
            model: "local/llama3".into(),
            ..live_config(&server)
        },
    )
    .await;
    assert_eq!(output(&report, "plan")["source"], "llm");
    let models = &serde_json::to_value(&report.metrics).unwrap()["llm"]["per_model"];
    assert_eq!(models["local/llama3"]["calls"], 2, "{models}");
}
