//! An unmodified aws-sdk-rust client, as a pod would run it: the default credential chain (which
//! reads `AWS_CONTAINER_CREDENTIALS_FULL_URI` and `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`) and
//! `sts get-caller-identity`. Prints the caller ARN. Used by `tests/sdk_clients.rs`.

use aws_config::BehaviorVersion;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let identity = aws_sdk_sts::Client::new(&config)
        .get_caller_identity()
        .send()
        .await?;
    println!("{}", identity.arn().unwrap_or_default());
    Ok(())
}
