import logging

log = logging.getLogger("secrets_model")


class Model:
    def __init__(self, secrets):
        self.secrets = secrets

    def load(self):
        log.warning(
            "loaded with secrets %s and api_key=%s", self.secrets, self.secrets.get("api_key")
        )

    def predict(self, model_input):
        if model_input.get("leak"):
            raise RuntimeError(f"cannot connect with password {self.secrets['db_password']}")
        return {
            "names": sorted(self.secrets),
            "api_key_length": len(self.secrets.get("api_key", "")),
            "db_password_length": len(self.secrets.get("db_password", "")),
            "with_default_matches": self.secrets.get("with_default") == "default-value-123",
        }
