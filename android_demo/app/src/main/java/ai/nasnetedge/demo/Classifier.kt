package ai.nasnetedge.demo

import ai.nasnetedge.core.Classification
import ai.nasnetedge.core.FrameProcessor
import ai.nasnetedge.core.Json
import ai.nasnetedge.core.Preprocessing
import android.content.Context
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.gpu.GpuDelegate
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.util.zip.ZipInputStream

/** Which engine runs the model: LiteRT with XNNPACK (CPU) or its GPU delegate, or ExecuTorch (.pte). */
enum class Backend(val title: String) { LITERT_XNNPACK("LiteRT XNNPACK"), LITERT_GPU("LiteRT GPU"), EXECUTORCH("ExecuTorch XNNPACK") }

/** A converted model plus what the toolkit wrote about it: labels and preprocessing come from the
 *  manifest (beside the .pte) or from the metadata embedded in the .tflite, never from constants. */
interface Classifier : AutoCloseable {
    val labels: List<String>
    val preprocessing: Preprocessing
    fun logits(input: FloatArray): FloatArray
}

class LiteRtClassifier(model: File, threads: Int, gpu: Boolean) : Classifier {
    private val manifest = embeddedManifest(model)
    override val labels = Json.stringArray(manifest, "labels")
    override val preprocessing = Preprocessing.fromManifest(manifest)
    private val gpuDelegate = if (gpu) GpuDelegate() else null
    private val interpreter = Interpreter(model, Interpreter.Options().apply {
        setNumThreads(threads)
        setUseXNNPACK(!gpu)
        gpuDelegate?.let { addDelegate(it) }
    })
    private val input = interpreter.getInputTensor(0)
    private val output = interpreter.getOutputTensor(0)

    override fun logits(input: FloatArray): FloatArray {
        val inBuf: ByteBuffer
        if (this.input.dataType().name == "INT8") {
            val q = this.input.quantizationParams()
            inBuf = ByteBuffer.wrap(FrameProcessor.quantize(input, q.scale, q.zeroPoint))
        } else {
            inBuf = ByteBuffer.allocateDirect(input.size * 4).order(ByteOrder.nativeOrder())
            inBuf.asFloatBuffer().put(input)
        }
        val n = output.shape()[1]
        return if (output.dataType().name == "INT8") {
            val out = ByteArray(n)
            interpreter.run(inBuf, out)
            val q = output.quantizationParams()
            Classification.dequantize(out, q.scale, q.zeroPoint)
        } else {
            val out = Array(1) { FloatArray(n) }
            interpreter.run(inBuf, out)
            out[0]
        }
    }

    override fun close() {
        interpreter.close()
        gpuDelegate?.close()
    }

    companion object {
        /** manifest.json from the zip the toolkit appends to every .tflite (TFLite Support convention). */
        fun embeddedManifest(model: File): String {
            val bytes = model.readBytes()
            // the appended zip starts at the first local-file header after the flatbuffer
            for (i in 0 until bytes.size - 4) {
                if (bytes[i] == 0x50.toByte() && bytes[i + 1] == 0x4B.toByte() && bytes[i + 2] == 3.toByte() &&
                    bytes[i + 3] == 4.toByte()) {
                    ZipInputStream(bytes.inputStream(i, bytes.size - i)).use { zip ->
                        var e = zip.nextEntry
                        while (e != null) {
                            if (e.name == "manifest.json") return zip.readBytes().toString(Charsets.UTF_8)
                            e = zip.nextEntry
                        }
                    }
                }
            }
            throw IllegalArgumentException("${model.name}: no toolkit manifest inside; convert it with converters.tflite")
        }
    }
}

class ExecuTorchClassifier(model: File) : Classifier {
    private val manifest = File(model.path + ".json").readText()
    override val labels = Json.stringArray(manifest, "labels")
    override val preprocessing = Preprocessing.fromManifest(manifest)
    private val module = Module.load(model.path)

    override fun logits(input: FloatArray): FloatArray {
        // the toolkit's .pte takes NCHW float; the core module produces NHWC
        val s = preprocessing.size
        val nchw = FloatArray(input.size)
        for (c in 0 until 3) for (y in 0 until s) for (x in 0 until s) nchw[(c * s + y) * s + x] = input[(y * s + x) * 3 + c]
        val out = module.forward(EValue.from(Tensor.fromBlob(nchw, longArrayOf(1, 3, s.toLong(), s.toLong()))))
        return out[0].toTensor().dataAsFloatArray
    }

    override fun close() = module.destroy()
}

fun copyAsset(context: Context, name: String): File {
    val f = File(context.filesDir, name)
    if (!f.exists()) context.assets.open(name).use { input -> f.outputStream().use { input.copyTo(it) } }
    return f
}
