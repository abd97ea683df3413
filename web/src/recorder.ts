// Recording from the microphone into a WAV file, which every audio input of every model reads
// (MediaRecorder's own WebM or Ogg is not what the server's decoder takes).

export class Recording {
  private chunks: Blob[] = [];
  private recorder: MediaRecorder;
  private stopped: Promise<void>;

  private constructor(private stream: MediaStream) {
    this.recorder = new MediaRecorder(stream);
    this.recorder.addEventListener("dataavailable", (event) => this.chunks.push(event.data));
    this.stopped = new Promise((resolve) => this.recorder.addEventListener("stop", () => resolve()));
    this.recorder.start();
  }

  /** Starts recording; the browser asks for the microphone first. */
  static async start(): Promise<Recording> {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new Error("This browser cannot record here (a microphone needs https or localhost).");
    }
    return new Recording(await navigator.mediaDevices.getUserMedia({ audio: true }));
  }

  /** Stops, releases the microphone, and gives what was recorded as 16-bit WAV. */
  async stop(): Promise<Blob> {
    this.recorder.stop();
    await this.stopped;
    for (const track of this.stream.getTracks()) track.stop();
    const encoded = await new Blob(this.chunks, { type: this.recorder.mimeType }).arrayBuffer();
    const context = new OfflineAudioContext(1, 1, 44100);
    return wav(await context.decodeAudioData(encoded));
  }
}

/** An AudioBuffer as a 16-bit PCM WAV file. */
export function wav(buffer: AudioBuffer): Blob {
  const channels = buffer.numberOfChannels;
  const frames = buffer.length;
  const bytes = new DataView(new ArrayBuffer(44 + frames * channels * 2));
  const text = (offset: number, value: string) => {
    for (let i = 0; i < value.length; i++) bytes.setUint8(offset + i, value.charCodeAt(i));
  };
  text(0, "RIFF");
  bytes.setUint32(4, 36 + frames * channels * 2, true);
  text(8, "WAVE");
  text(12, "fmt ");
  bytes.setUint32(16, 16, true);
  bytes.setUint16(20, 1, true); // PCM
  bytes.setUint16(22, channels, true);
  bytes.setUint32(24, buffer.sampleRate, true);
  bytes.setUint32(28, buffer.sampleRate * channels * 2, true);
  bytes.setUint16(32, channels * 2, true);
  bytes.setUint16(34, 16, true);
  text(36, "data");
  bytes.setUint32(40, frames * channels * 2, true);
  const data = Array.from({ length: channels }, (_, c) => buffer.getChannelData(c));
  let offset = 44;
  for (let i = 0; i < frames; i++) {
    for (let c = 0; c < channels; c++) {
      const sample = Math.max(-1, Math.min(1, data[c][i]));
      bytes.setInt16(offset, sample < 0 ? sample * 0x8000 : sample * 0x7fff, true);
      offset += 2;
    }
  }
  return new Blob([bytes], { type: "audio/wav" });
}
