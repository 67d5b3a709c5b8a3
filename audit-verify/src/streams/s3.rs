//! `stream_s3`: offline checks of an S3 stream's settings, and the IAM documents the guide asks
//! for, filled in.
//!
//! The guide requires a bucket, an IAM role WorkOS can assume (a trust relationship to WorkOS's
//! AWS account with the external id) and a policy allowing `s3:PutObject` and
//! `s3:PutObjectAcl` on the bucket's objects. WorkOS's AWS account id is shown in the WorkOS
//! dashboard when the stream is created; it is not documented, so the trust relationship names it
//! as a placeholder.

use serde_json::json;

use crate::report::{CheckId, CheckResult};

const ID: CheckId = CheckId::StreamS3;

/// The placeholder for WorkOS's AWS account id in [`s3_trust_relationship`].
pub const WORKOS_AWS_ACCOUNT_PLACEHOLDER: &str = "WORKOS_AWS_ACCOUNT_ID";

fn bucket_problem(b: &str) -> Option<String> {
    if !(3..=63).contains(&b.len()) {
        return Some(format!(
            "is {} characters long; bucket names have 3 to 63",
            b.len()
        ));
    }
    if let Some(c) = b
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
    {
        return Some(format!(
            "contains '{c}'; only lower-case letters, digits, dots and hyphens are allowed"
        ));
    }
    let first_last = [b.chars().next(), b.chars().last()];
    if first_last
        .iter()
        .any(|c| !c.is_some_and(|c| c.is_ascii_alphanumeric()))
    {
        return Some("must begin and end with a letter or digit".into());
    }
    if b.contains("..") {
        return Some("has two adjacent dots".into());
    }
    if b.split('.').count() == 4 && b.split('.').all(|p| p.parse::<u8>().is_ok()) {
        return Some("is formatted as an IP address".into());
    }
    if b.starts_with("xn--") || b.starts_with("sthree-") {
        return Some("uses a reserved prefix (xn--, sthree-)".into());
    }
    if b.ends_with("-s3alias") || b.ends_with("--ol-s3") {
        return Some("uses a reserved suffix (-s3alias, --ol-s3)".into());
    }
    None
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `ap-southeast-4`, `cn-north-1`, ...
fn region_ok(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

/// The partition of a role ARN (`aws`, `aws-us-gov`, `aws-cn`), or why it is not one.
fn role_partition(arn: &str) -> Result<&str, String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts.as_slice() else {
        return Err("is not an ARN (arn:aws:iam::123456789012:role/NAME)".into());
    };
    if *prefix != "arn" || !["aws", "aws-us-gov", "aws-cn"].contains(partition) {
        return Err("must start with arn:aws: (or arn:aws-us-gov:, arn:aws-cn:)".into());
    }
    if *service != "iam" || !region.is_empty() {
        return Err("must be an IAM ARN: arn:aws:iam::ACCOUNT:role/NAME".into());
    }
    if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "names the account '{account}'; an AWS account id has 12 digits"
        ));
    }
    let Some(name) = resource.strip_prefix("role/") else {
        return Err("must name a role (…:role/NAME), not a user or a policy".into());
    };
    let name = name.rsplit('/').next().unwrap_or("");
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
    {
        return Err("has a role name that is empty, longer than 64 or uses characters other than letters, digits and +=,.@_-".into());
    }
    Ok(partition)
}

fn external_id_problem(id: &str) -> Option<String> {
    if !(2..=1224).contains(&id.len()) {
        return Some(format!(
            "is {} characters long; an external id has 2 to 1224",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "+=,.@:/-_".contains(*c)))
    {
        return Some(format!(
            "contains '{c}'; allowed are letters, digits and +=,.@:/-_"
        ));
    }
    None
}

/// The IAM policy the guide requires, for this bucket (`partition` as in the role ARN, `aws` by
/// default).
pub fn s3_policy(bucket: &str, partition: &str) -> String {
    let doc = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:PutObjectAcl"],
            "Resource": format!("arn:{partition}:s3:::{bucket}/*"),
        }]
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// The role's trust relationship: WorkOS's AWS account (a placeholder, see
/// [`WORKOS_AWS_ACCOUNT_PLACEHOLDER`]) may assume it with this external id.
pub fn s3_trust_relationship(external_id: &str, partition: &str) -> String {
    let doc = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:{partition}:iam::{WORKOS_AWS_ACCOUNT_PLACEHOLDER}:root")},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
        }]
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

pub(super) fn check(bucket: &str, region: &str, role_arn: &str, external_id: &str) -> CheckResult {
    let bucket = bucket.trim();
    if let Some(p) = bucket_problem(bucket) {
        return CheckResult::fail(
            ID,
            format!("the bucket name '{bucket}' {p}"),
            "use the bucket's exact name as S3 shows it",
        );
    }
    if !region_ok(region.trim()) {
        return CheckResult::fail(
            ID,
            format!("the region '{}' is not an AWS region code", region.trim()),
            "use the bucket's region code as S3 shows it, e.g. us-east-1 or eu-central-1",
        );
    }
    if let Err(e) = role_partition(role_arn.trim()) {
        return CheckResult::fail(
            ID,
            format!("the role ARN {e}"),
            "copy the role's ARN from IAM → Roles → the role → ARN",
        );
    }
    if let Some(p) = external_id_problem(external_id) {
        return CheckResult::fail(
            ID,
            format!("the external id {p}"),
            "use the external id of the role's trust relationship (the one WorkOS shows when the stream is created)",
        );
    }
    let finding = format!(
        "bucket {bucket} in {}, role {}, external id set: the names and formats are valid (offline check: access is not tested)",
        region.trim(),
        role_arn.trim()
    );
    if bucket.contains('.') {
        return CheckResult::warn(
            ID,
            format!("{finding}; the bucket name has dots"),
            Some("dots break virtual-hosted-style HTTPS to the bucket: prefer a name without dots".into()),
        );
    }
    CheckResult::pass(ID, finding)
}

/// The partition of a valid role ARN (`aws` when it cannot be read), for the IAM documents.
pub fn partition_of(role_arn: &str) -> &str {
    role_partition(role_arn.trim()).unwrap_or("aws")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_formats() {
        assert!(bucket_problem("workos-audit-logs").is_none());
        for bad in [
            "ab",
            "Upper",
            "-start",
            "end-",
            "a..b",
            "192.168.1.1",
            "xn--abc",
            "x-s3alias",
            "a_b",
        ] {
            assert!(bucket_problem(bad).is_some(), "{bad}");
        }
        for ok in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "ap-southeast-4",
            "cn-north-1",
        ] {
            assert!(region_ok(ok), "{ok}");
        }
        for bad in ["useast1", "US-EAST-1", "us-east", "eu-1"] {
            assert!(!region_ok(bad), "{bad}");
        }
        assert_eq!(
            role_partition("arn:aws:iam::123456789012:role/workos-streams"),
            Ok("aws")
        );
        assert_eq!(
            role_partition("arn:aws-us-gov:iam::123456789012:role/path/x"),
            Ok("aws-us-gov")
        );
        assert!(role_partition("arn:aws:iam::12345:role/x").is_err());
        assert!(role_partition("arn:aws:iam::123456789012:user/x").is_err());
        assert!(role_partition("arn:aws:s3:::bucket").is_err());
        assert!(external_id_problem("workos-ext-1234").is_none());
        assert!(external_id_problem("x").is_some());
        assert!(external_id_problem("has space").is_some());
    }

    #[test]
    fn documents_are_filled_in() {
        let policy: serde_json::Value = serde_json::from_str(&s3_policy("my-bucket", "aws")).unwrap();
        assert_eq!(policy["Statement"][0]["Resource"], "arn:aws:s3:::my-bucket/*");
        assert_eq!(
            policy["Statement"][0]["Action"],
            json!(["s3:PutObject", "s3:PutObjectAcl"])
        );
        let trust: serde_json::Value = serde_json::from_str(&s3_trust_relationship("ext-1", "aws")).unwrap();
        assert_eq!(
            trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"],
            "ext-1"
        );
        assert_eq!(trust["Statement"][0]["Action"], "sts:AssumeRole");
    }
}
