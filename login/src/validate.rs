//! Input rules for usernames, passwords, display names and device ids, each failing with its own
//! error code.

use protocol::ErrorCode;
use service_runtime::api::ApiError;

pub const USERNAME_MIN: usize = 3;
pub const USERNAME_MAX: usize = 24;
pub const PASSWORD_MIN: usize = 8;
pub const PASSWORD_MAX: usize = 128;
pub const DISPLAY_NAME_MAX: usize = 32;
pub const DEVICE_ID_MIN: usize = 16;
pub const DEVICE_ID_MAX: usize = 128;

pub fn username(s: &str) -> Result<(), ApiError> {
    let ok = (USERNAME_MIN..=USERNAME_MAX).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(ApiError::new(ErrorCode::InvalidUsername)) }
}

pub fn password(s: &str) -> Result<(), ApiError> {
    let n = s.chars().count();
    if (PASSWORD_MIN..=PASSWORD_MAX).contains(&n) && s.len() <= PASSWORD_MAX * 4 {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::WeakPassword))
    }
}

pub fn display_name(s: &str) -> Result<(), ApiError> {
    let n = s.chars().count();
    let ok = (1..=DISPLAY_NAME_MAX).contains(&n) && s.trim() == s && !s.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(ApiError::msg(
            ErrorCode::InvalidField,
            format!("display_name must be 1 to {DISPLAY_NAME_MAX} characters, no control characters or outer spaces"),
        ))
    }
}

pub fn device_id(s: &str) -> Result<(), ApiError> {
    let ok = (DEVICE_ID_MIN..=DEVICE_ID_MAX).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::msg(
            ErrorCode::InvalidField,
            format!("device_id must be {DEVICE_ID_MIN} to {DEVICE_ID_MAX} of A-Z a-z 0-9 . _ : -"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(f: fn(&str) -> Result<(), ApiError>, input: &str, expected: Option<ErrorCode>) {
        assert_eq!(f(input).err().map(|e| e.code), expected, "{input:?}");
    }

    #[test]
    fn usernames() {
        check(username, "alice", None);
        check(username, "Bob_the-2nd", None);
        check(username, "ab", Some(ErrorCode::InvalidUsername));
        check(username, &"a".repeat(25), Some(ErrorCode::InvalidUsername));
        check(username, "robert'); DROP TABLE users;--", Some(ErrorCode::InvalidUsername));
        check(username, "ünï", Some(ErrorCode::InvalidUsername));
        check(username, "a b c", Some(ErrorCode::InvalidUsername));
    }

    #[test]
    fn passwords_and_names() {
        check(password, "12345678", None);
        check(password, "1234567", Some(ErrorCode::WeakPassword));
        check(password, &"x".repeat(129), Some(ErrorCode::WeakPassword));
        check(password, "' OR 1=1 --", None);
        check(display_name, "Zoë the Great", None);
        check(display_name, "", Some(ErrorCode::InvalidField));
        check(display_name, " padded", Some(ErrorCode::InvalidField));
        check(display_name, "bell\u{7}", Some(ErrorCode::InvalidField));
        check(device_id, "device-0123456789abcdef", None);
        check(device_id, "short", Some(ErrorCode::InvalidField));
        check(device_id, "device 0123456789abcdef", Some(ErrorCode::InvalidField));
    }
}
