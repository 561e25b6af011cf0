package ai.nasnetedge.core

import java.io.DataInputStream
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder

/**
 * Command-line entry used by the cross-language golden test (tests/test_android_core.py):
 *   yuv  Y U V width height yRowStride uvRowStride uvPixelStride rotation manifest.json out.f32
 *   topk logits.f32 manifest.json k          -> prints "index<TAB>probability" lines
 */
fun main(args: Array<String>) {
    when (args[0]) {
        "yuv" -> {
            val pre = Preprocessing.fromManifest(File(args[10]).readText())
            val x = FrameProcessor.process(
                File(args[1]).readBytes(), File(args[2]).readBytes(), File(args[3]).readBytes(),
                args[4].toInt(), args[5].toInt(), args[6].toInt(), args[7].toInt(), args[8].toInt(), args[9].toInt(), pre
            )
            val buf = ByteBuffer.allocate(x.size * 4).order(ByteOrder.LITTLE_ENDIAN)
            for (f in x) buf.putFloat(f)
            File(args[11]).writeBytes(buf.array())
        }
        "topk" -> {
            val bytes = File(args[1]).readBytes()
            val bb = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN)
            val logits = FloatArray(bytes.size / 4) { bb.getFloat() }
            val labels = Json.stringArray(File(args[2]).readText(), "labels")
            for (p in Classification.topK(Classification.softmax(logits), labels, args[3].toInt())) {
                println("${p.index}\t${p.probability}\t${p.label}")
            }
        }
        else -> throw IllegalArgumentException("unknown mode ${args[0]}")
    }
}
