// Reference firmware for an SOS Bridge DIY panic button (hardware/diy-frame.md), Arduino-style C++.
// One button on BUTTON_PIN (to GND, internal pull-up); serial link at 9600 8N1 to the bridge.
// Sends an SOS alert frame on a press and repeats it until the bridge answers ACK or NAK.
#include <EEPROM.h>

const uint8_t BUTTON_PIN = 2;
const uint32_t UNIT_ID = 0x00C0FFEE;  // register as identifiers.diy_unit = "00C0FFEE"
uint16_t boot_no;
uint16_t seq_no = 0;

uint16_t crc16_ccitt(const uint8_t *data, uint8_t len) {
  uint16_t crc = 0xFFFF;
  for (uint8_t i = 0; i < len; i++) {
    crc ^= (uint16_t)data[i] << 8;
    for (uint8_t b = 0; b < 8; b++) crc = (crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1;
  }
  return crc;
}

uint8_t build_alert(uint8_t *out, uint8_t kind, uint8_t flags, uint16_t seq) {
  uint8_t n = 0;
  out[n++] = 0xA5; out[n++] = 0x5A;
  out[n++] = 12;                       // LEN: VER..DATA
  out[n++] = 0x01;                     // VER
  out[n++] = 0x01;                     // TYPE alert
  out[n++] = UNIT_ID >> 24; out[n++] = UNIT_ID >> 16; out[n++] = UNIT_ID >> 8; out[n++] = UNIT_ID;
  out[n++] = boot_no >> 8; out[n++] = boot_no;
  out[n++] = seq >> 8; out[n++] = seq;
  out[n++] = kind; out[n++] = flags;
  uint16_t crc = crc16_ccitt(out + 2, n - 2);
  out[n++] = crc >> 8; out[n++] = crc;
  return n;
}

// 1 = ACK, 2 = NAK, 0 = no answer within timeout_ms
uint8_t wait_answer(uint16_t seq, uint32_t timeout_ms) {
  uint32_t start = millis();
  uint8_t buf[3], got = 0;
  while (millis() - start < timeout_ms) {
    if (!Serial.available()) continue;
    uint8_t c = Serial.read();
    if (got == 0 && c != 0x06 && c != 0x15) continue;
    buf[got++] = c;
    if (got == 3) {
      if (((uint16_t)buf[1] << 8 | buf[2]) == seq) return buf[0] == 0x06 ? 1 : 2;
      got = 0;
    }
  }
  return 0;
}

void setup() {
  pinMode(BUTTON_PIN, INPUT_PULLUP);
  Serial.begin(9600);
  boot_no = (EEPROM.read(0) << 8 | EEPROM.read(1)) + 1;  // new BOOT every power-up
  EEPROM.write(0, boot_no >> 8); EEPROM.write(1, boot_no & 0xFF);
}

void loop() {
  if (digitalRead(BUTTON_PIN) == LOW) {
    uint8_t frame[32];
    uint16_t seq = ++seq_no;
    uint8_t len = build_alert(frame, 0x01 /* sos */, 0, seq);
    uint32_t backoff = 2000;
    for (;;) {
      Serial.write(frame, len);
      if (wait_answer(seq, backoff)) break;  // ACK: stored; NAK: refused, do not retry
      backoff = backoff < 30000 ? backoff * 2 : 30000;
    }
    while (digitalRead(BUTTON_PIN) == LOW) delay(10);  // one alert per press
  }
}
