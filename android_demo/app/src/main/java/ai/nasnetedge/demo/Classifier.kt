package ai.nasnetedge.demo

import ai.nasnetedge.core.Classification
import ai.nasnetedge.core.FrameProcessor
import ai.nasnetedge.core.Json
import ai.nasnetedge.core.Preprocessing
import android.content.Context
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.gpu.CompatibilityList
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
    /** What actually runs the model (the GPU choice falls back to XNNPACK where LiteRT does not support it). */
    val engine: String
    val labels: List<String>
    val preprocessing: Preprocessing
    fun logits(input: FloatArray): FloatArray
}

class LiteRtClassifier(model: File, threads: Int, gpu: Boolean) : Classifier {
    private val manifest = embeddedManifest(model)
    override val labels = Json.stringArray(manifest, "labels")
    override val preprocessing = Preprocessing.fromManifest(manifest)
    // The GPU delegate only where LiteRT's compatibility list allows it, with the options it picks for
    // this device; elsewhere the model runs on XNNPACK. LiteRT 2.x runs the Interpreter API on the CPU
    // only, hence the 1.4.x artifacts (see app/build.gradle.kts).
    private val gpuDelegate: GpuDelegate? = if (gpu) {
        CompatibilityList().use { list ->
            if (list.isDelegateSupportedOnThisDevice) GpuDelegate(list.bestOptionsForThisDevice) else null
        }
    } else null
    override val engine = when {
        gpuDelegate != null -> "LiteRT GPU"
        gpu -> "LiteRT XNNPACK (no GPU delegate here)"
        else -> "LiteRT XNNPACK"
    }
    private val interpreter: Interpreter = try {
        Interpreter(model, Interpreter.Options().apply {
            setNumThreads(threads)
            setUseXNNPACK(gpuDelegate == null)
            gpuDelegate?.let { addDelegate(it) }
        })
    } catch (e: Exception) {
        gpuDelegate?.close()
        throw e
    }
    private val inTensor = interpreter.getInputTensor(0)
    private val outTensor = interpreter.getOutputTensor(0)

    override fun logits(input: FloatArray): FloatArray {
        // float (the converter's default, --io float), uint8 (--io uint8) or int8 (--io int8) input: quantized here
        // from the tensor's own parameters, which put the toolkit's preprocessing exactly on the pixel values
        val q = inTensor.quantizationParams()
        val inBuf: ByteBuffer = when (inTensor.dataType()) {
            DataType.INT8 -> ByteBuffer.wrap(FrameProcessor.quantize(input, q.scale, q.zeroPoint))
            DataType.UINT8 -> ByteBuffer.wrap(FrameProcessor.quantizeUint8(input, q.scale, q.zeroPoint))
            else -> ByteBuffer.allocateDirect(input.size * 4).order(ByteOrder.nativeOrder()).also { it.asFloatBuffer().put(input) }
        }
        val n = outTensor.shape()[1]
        val qo = outTensor.quantizationParams()
        // an array output must have exactly the tensor's shape, [1, n]
        return when (outTensor.dataType()) {
            DataType.INT8, DataType.UINT8 -> {
                val out = Array(1) { ByteArray(n) }
                interpreter.run(inBuf, out)
                if (outTensor.dataType() == DataType.INT8) Classification.dequantize(out[0], qo.scale, qo.zeroPoint)
                else Classification.dequantizeUint8(out[0], qo.scale, qo.zeroPoint)
            }
            else -> {
                val out = Array(1) { FloatArray(n) }
                interpreter.run(inBuf, out)
                out[0]
            }
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
                    // the signature can also occur by chance inside the flatbuffer: skip what is no zip
                    val found = try {
                        ZipInputStream(bytes.inputStream(i, bytes.size - i)).use { zip ->
                            var e = zip.nextEntry
                            var text: String? = null
                            while (e != null && text == null) {
                                if (e.name == "manifest.json") text = zip.readBytes().toString(Charsets.UTF_8)
                                e = zip.nextEntry
                            }
                            text
                        }
                    } catch (e: java.io.IOException) {
                        null
                    }
                    if (found != null) return found
                }
            }
            throw IllegalArgumentException("${model.name}: no toolkit manifest inside; convert it with converters.tflite")
        }
    }
}

class ExecuTorchClassifier(model: File, threads: Int) : Classifier {
    private val manifest = File(model.path + ".json").readText()
    override val engine = "ExecuTorch XNNPACK"
    override val labels = Json.stringArray(manifest, "labels")
    override val preprocessing = Preprocessing.fromManifest(manifest)
    // memory-mapped; numThreads sizes the XNNPACK thread pool (0 would mean the runtime's default)
    private val module = Module.load(model.path, Module.LOAD_MODE_MMAP, threads)
    // NHWC: the program's input has channels-last dim order (the converter's xnnpack default), so the core
    // module's NHWC floats go in as they are; NCHW programs get them transposed. ExecuTorch copies input bytes
    // without checking their order, so this must follow the manifest.
    private val layout = FrameProcessor.programLayout(manifest)

    override fun logits(input: FloatArray): FloatArray {
        val s = preprocessing.size
        val data = if (layout == "NHWC") input else FrameProcessor.toNchw(input, s)
        val out = module.forward(EValue.from(Tensor.fromBlob(data, longArrayOf(1, 3, s.toLong(), s.toLong()))))
        return out[0].toTensor().dataAsFloatArray
    }

    override fun close() = module.destroy()
}

/** Copies an asset to internal storage once (LiteRT and ExecuTorch load models from a file path). */
fun copyAsset(context: Context, name: String): File {
    val f = File(context.filesDir, name)
    if (!f.exists()) {
        // through a temporary file, so that an interrupted copy never leaves a truncated model behind
        val tmp = File(context.filesDir, "$name.part")
        context.assets.open(name).use { input -> tmp.outputStream().use { input.copyTo(it) } }
        check(tmp.renameTo(f)) { "cannot move $tmp to $f" }
    }
    return f
}
