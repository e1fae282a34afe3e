//! Console passwords with real Argon2id: `writ_gateway::auth::passwords` over a real store.

use writ_identity::UserId;
use writ_store::StoreError;

use crate::{Db, alice_and_bot, identity, now};

/// The password flows with real Argon2id: setting one by the user (current password required
/// once one is set) and by an operator, and sign-in that refuses unknown users, wrong passwords
/// and a locked password alike.
async fn password_change_and_sign_in(db: Db) {
    use writ_gateway::auth::passwords::{Authority, PasswordChangeError, SignIn, change, sign_in};
    use writ_identity::password::{Password, PasswordError};

    let s = identity(&db).await;
    alice_and_bot(s.as_ref()).await;
    let alice = UserId::new("alice").unwrap();
    let pw = |t: &str| Password::new(t);
    let user = |current: Option<&str>| Authority::User {
        current: current.map(Password::new),
    };

    // Rules first, and no row for a user who does not exist.
    assert!(matches!(
        change(s.as_ref(), &alice, &pw("short"), user(None), now()).await,
        Err(PasswordChangeError::Invalid(PasswordError::TooShort))
    ));
    assert!(matches!(
        change(
            s.as_ref(),
            &UserId::new("nobody").unwrap(),
            &pw("a long enough one"),
            Authority::Operator,
            now()
        )
        .await,
        Err(PasswordChangeError::Store(StoreError::NotFound(_)))
    ));
    // The first password needs no current one.
    let set_at = change(
        s.as_ref(),
        &alice,
        &pw("correct horse battery"),
        user(None),
        now(),
    )
    .await
    .unwrap();
    let stored = s.password(&alice).await.unwrap().unwrap();
    assert!(
        stored.phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        stored.phc
    );
    assert_eq!(stored.set_at, set_at);

    match sign_in(s.as_ref(), " alice ", &pw("correct horse battery"), now())
        .await
        .unwrap()
    {
        SignIn::Accepted { user, set_at: at } => {
            assert_eq!(user.id, alice);
            assert_eq!(at, set_at);
        }
        other => panic!("{other:?}"),
    }
    for (who, password) in [
        ("alice", "correct horse batterz"),
        ("nobody", "correct horse battery"),
        ("not a user id!", "correct horse battery"),
    ] {
        assert!(
            matches!(
                sign_in(s.as_ref(), who, &pw(password), now())
                    .await
                    .unwrap(),
                SignIn::Refused
            ),
            "{who}"
        );
    }
    assert_eq!(s.password(&alice).await.unwrap().unwrap().failures, 1);

    // Changing it as the user needs the current password; a wrong one counts as a failure.
    assert!(matches!(
        change(
            s.as_ref(),
            &alice,
            &pw("a brand new password"),
            user(None),
            now()
        )
        .await,
        Err(PasswordChangeError::CurrentRequired(_))
    ));
    assert!(matches!(
        change(
            s.as_ref(),
            &alice,
            &pw("a brand new password"),
            user(Some("wrong guess here")),
            now()
        )
        .await,
        Err(PasswordChangeError::CurrentWrong)
    ));
    assert_eq!(s.password(&alice).await.unwrap().unwrap().failures, 2);

    // Three more failures lock it: then even the right password is refused, as Locked.
    for _ in 0..2 {
        assert!(matches!(
            sign_in(s.as_ref(), "alice", &pw("still not it"), now())
                .await
                .unwrap(),
            SignIn::Refused
        ));
    }
    let locked = sign_in(s.as_ref(), "alice", &pw("still not it"), now())
        .await
        .unwrap();
    assert!(
        matches!(locked, SignIn::Locked { failures: 5, .. }),
        "{locked:?}"
    );
    let locked = sign_in(s.as_ref(), "alice", &pw("correct horse battery"), now())
        .await
        .unwrap();
    assert!(
        matches!(locked, SignIn::Locked { failures: 6, .. }),
        "{locked:?}"
    );
    assert!(matches!(
        change(
            s.as_ref(),
            &alice,
            &pw("a brand new password"),
            user(Some("correct horse battery")),
            now()
        )
        .await,
        Err(PasswordChangeError::Locked(_))
    ));

    // An operator sets a new one regardless; it clears the lock, and the old one is gone.
    let later = change(
        s.as_ref(),
        &alice,
        &pw("a brand new password"),
        Authority::Operator,
        now(),
    )
    .await
    .unwrap();
    assert!(later > set_at);
    assert!(matches!(
        sign_in(s.as_ref(), "alice", &pw("correct horse battery"), now())
            .await
            .unwrap(),
        SignIn::Refused
    ));
    assert!(matches!(
        sign_in(s.as_ref(), "alice", &pw("a brand new password"), now())
            .await
            .unwrap(),
        SignIn::Accepted { .. }
    ));
    // A success clears the failure count.
    assert_eq!(s.password(&alice).await.unwrap().unwrap().failures, 0);
    db.cleanup().await;
}
on_both_backends!(password_change_and_sign_in);
