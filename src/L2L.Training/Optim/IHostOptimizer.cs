// The host-side optimizer the eager param server calls once per layer slice as its gradients complete.
namespace L2L.Training.Optim;

/// <summary>
/// One optimizer over many parameter tensors ("slices"); each slice is a contiguous float span owned by the caller,
/// together with its gradient, its optimizer state and an optional FP16 or BF16 copy of the updated weights.
/// </summary>
/// <remarks>
/// <para>Instances hold no per-slice state, so one instance serves a whole model. <see cref="Step(Span{float}, ReadOnlySpan{float}, Span{float}, Span{Half}, int, float, bool)"/>
/// may be called concurrently from several threads on disjoint slices; each call spreads its own slice over up to
/// the instance's thread limit (the calling thread included) and returns when the slice is updated.</para>
/// <para>State layout: <c>StateFloatsPerParam * length</c> floats; for AdamW and LAMB the first moment <c>m</c>
/// occupies <c>state[0..length)</c> and the second moment <c>v</c> occupies <c>state[length..2*length)</c>.
/// Zero-initialised state means a fresh optimizer.</para>
/// <para>Gradients may be FP32, FP16 or BF16 and the copy FP16, BF16 or none, in any combination: a 16-bit gradient
/// is widened to FP32 as it is loaded (exact for both formats), so the FP32 result equals that of widening the
/// gradients first and stepping on FP32 gradients, bit for bit.</para>
/// <para>The FP32 result of every element is independent of the thread count, of how the slice is split into tiles
/// and of which code path (vector body or scalar tail) handled it: both paths perform the same IEEE operations in
/// the same order and neither uses fused multiply-add.</para>
/// </remarks>
public interface IHostOptimizer
{
    /// <summary>The update rule.</summary>
    OptimizerKind Kind { get; }

    /// <summary>Number of float state values per parameter (SGD 0; AdamW and LAMB 2: <c>m</c> then <c>v</c>).</summary>
    int StateFloatsPerParam { get; }

    /// <summary>Updates one slice in place from FP32 gradients.</summary>
    /// <param name="param">FP32 master weights, updated in place.</param>
    /// <param name="grad">FP32 gradients, same length as <paramref name="param"/>.</param>
    /// <param name="state"><see cref="StateFloatsPerParam"/> times the slice length floats: <c>m</c> then <c>v</c>.</param>
    /// <param name="half">Empty, or a span of the slice's length that receives <c>(Half)param</c> after the update, written in the same pass.</param>
    /// <param name="step">The 1-based optimizer step count of this slice; bias corrections use the closed form <c>1 - beta^step</c>, so resuming at any step is exact.</param>
    /// <param name="lr">The learning rate for this step.</param>
    /// <param name="decay">Whether weight decay applies to this slice (2-D weights and embeddings yes, biases and LayerNorm no).</param>
    void Step(Span<float> param, ReadOnlySpan<float> grad, Span<float> state, Span<Half> half, int step, float lr, bool decay);

    /// <summary>Updates one slice in place from FP16 gradients, which are widened to FP32 in the same pass.</summary>
    /// <param name="param">FP32 master weights, updated in place.</param>
    /// <param name="grad">FP16 gradients, same length as <paramref name="param"/>.</param>
    /// <param name="state"><see cref="StateFloatsPerParam"/> times the slice length floats: <c>m</c> then <c>v</c>.</param>
    /// <param name="half">Empty, or a span of the slice's length that receives <c>(Half)param</c> after the update, written in the same pass.</param>
    /// <param name="step">The 1-based optimizer step count of this slice.</param>
    /// <param name="lr">The learning rate for this step.</param>
    /// <param name="decay">Whether weight decay applies to this slice.</param>
    void Step(Span<float> param, ReadOnlySpan<Half> grad, Span<float> state, Span<Half> half, int step, float lr, bool decay);

    /// <summary>Updates one slice in place from BF16 gradients, which are widened to FP32 (exactly) in the same pass.</summary>
    /// <param name="param">FP32 master weights, updated in place.</param>
    /// <param name="grad">BF16 gradients, same length as <paramref name="param"/>.</param>
    /// <param name="state"><see cref="StateFloatsPerParam"/> times the slice length floats: <c>m</c> then <c>v</c>.</param>
    /// <param name="half">Empty, or a span of the slice's length that receives <c>(Half)param</c> after the update, written in the same pass.</param>
    /// <param name="step">The 1-based optimizer step count of this slice.</param>
    /// <param name="lr">The learning rate for this step.</param>
    /// <param name="decay">Whether weight decay applies to this slice.</param>
    void Step(Span<float> param, ReadOnlySpan<L2L.Kernels.Bf16> grad, Span<float> state, Span<Half> half, int step, float lr, bool decay);

    /// <summary>
    /// Updates one slice in place from FP32 gradients and writes the BF16 copy of the updated weights in the same pass
    /// (a name of its own, so that an empty <c>[]</c> copy argument of <c>Step</c> stays unambiguous),
    /// rounded to nearest even (bit-identical to the device's <see cref="L2L.Kernels.Bf16.FromSingle"/>). The FP32
    /// result is the same as with an FP16 copy or none.
    /// </summary>
    /// <param name="param">FP32 master weights, updated in place.</param>
    /// <param name="grad">FP32 gradients, same length as <paramref name="param"/>.</param>
    /// <param name="state"><see cref="StateFloatsPerParam"/> times the slice length floats: <c>m</c> then <c>v</c>.</param>
    /// <param name="bf16">Empty, or a span of the slice's length that receives <c>(bf16)param</c> after the update.</param>
    /// <param name="step">The 1-based optimizer step count of this slice.</param>
    /// <param name="lr">The learning rate for this step.</param>
    /// <param name="decay">Whether weight decay applies to this slice.</param>
    void StepWithBf16Copy(Span<float> param, ReadOnlySpan<float> grad, Span<float> state, Span<L2L.Kernels.Bf16> bf16, int step, float lr, bool decay);

    /// <summary>Updates one slice in place from FP16 gradients (widened in the same pass) and writes the BF16 copy of the updated weights.</summary>
    /// <param name="param">FP32 master weights, updated in place.</param>
    /// <param name="grad">FP16 gradients, same length as <paramref name="param"/>.</param>
    /// <param name="state"><see cref="StateFloatsPerParam"/> times the slice length floats: <c>m</c> then <c>v</c>.</param>
    /// <param name="bf16">Empty, or a span of the slice's length that receives <c>(bf16)param</c> after the update.</param>
    /// <param name="step">The 1-based optimizer step count of this slice.</param>
    /// <param name="lr">The learning rate for this step.</param>
    /// <param name="decay">Whether weight decay applies to this slice.</param>
    void StepWithBf16Copy(Span<float> param, ReadOnlySpan<Half> grad, Span<float> state, Span<L2L.Kernels.Bf16> bf16, int step, float lr, bool decay);

    /// <summary>Updates one slice in place from BF16 gradients (widened in the same pass) and writes the BF16 copy of the updated weights.</summary>
    /// <param name="param">FP32 master weights, updated in place.</param>
    /// <param name="grad">BF16 gradients, same length as <paramref name="param"/>.</param>
    /// <param name="state"><see cref="StateFloatsPerParam"/> times the slice length floats: <c>m</c> then <c>v</c>.</param>
    /// <param name="bf16">Empty, or a span of the slice's length that receives <c>(bf16)param</c> after the update.</param>
    /// <param name="step">The 1-based optimizer step count of this slice.</param>
    /// <param name="lr">The learning rate for this step.</param>
    /// <param name="decay">Whether weight decay applies to this slice.</param>
    void StepWithBf16Copy(Span<float> param, ReadOnlySpan<L2L.Kernels.Bf16> grad, Span<float> state, Span<L2L.Kernels.Bf16> bf16, int step, float lr, bool decay);
}
