use audit_tower::action;

#[action("Team Created!")]
async fn create_team() -> &'static str {
    "created"
}

fn main() {}
