// Launchers for GELU: GPT-2's tanh approximation and BERT's exact (erf) form.
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;

namespace L2L.Backends.Ops;

/// <summary>
/// GELU element-wise: <see cref="Forward"/> / <see cref="Backward"/> are the tanh approximation
/// <c>0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))</c>, <see cref="ForwardErf"/> / <see cref="BackwardErf"/>
/// the exact <c>0.5 x (1 + erf(x / sqrt 2))</c>; kernels loaded once per accelerator.
/// </summary>
public sealed class GeluOps
{
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>> _forward;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>> _backward;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>> _forwardErf;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>> _backwardErf;

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator.</summary>
    public GeluOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        _forward = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>>(GeluKernels.GeluForwardKernel);
        _backward = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>>(GeluKernels.GeluBackwardKernel);
        _forwardErf = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>>(GeluKernels.GeluErfForwardKernel);
        _backwardErf = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>>(GeluKernels.GeluErfBackwardKernel);
    }

    /// <summary><c>output = gelu(input)</c>, both of one length; <c>output</c> may alias <c>input</c>.</summary>
    public void Forward(AcceleratorStream s, ArrayView<float> output, ArrayView<float> input)
    {
        Check.SameLength(output, input, nameof(input));
        if (output.Length == 0) return;
        _forward(s, Launch.Elementwise(_accelerator, output.Length), output, input);
    }

    /// <summary><c>dInput = dOutput * gelu'(input)</c> (assigned), all of one length; <c>dInput</c> may alias <c>dOutput</c>.</summary>
    public void Backward(AcceleratorStream s, ArrayView<float> dInput, ArrayView<float> dOutput, ArrayView<float> input)
    {
        Check.SameLength(dInput, dOutput, nameof(dOutput));
        Check.SameLength(dInput, input, nameof(input));
        if (dInput.Length == 0) return;
        _backward(s, Launch.Elementwise(_accelerator, dInput.Length), dInput, dOutput, input);
    }

    /// <summary><c>output = 0.5 x (1 + erf(x / sqrt 2))</c>, both of one length; <c>output</c> may alias <c>input</c>.</summary>
    public void ForwardErf(AcceleratorStream s, ArrayView<float> output, ArrayView<float> input)
    {
        Check.SameLength(output, input, nameof(input));
        if (output.Length == 0) return;
        _forwardErf(s, Launch.Elementwise(_accelerator, output.Length), output, input);
    }

    /// <summary><c>dInput = dOutput * gelu'(input)</c> for exact GELU (assigned), all of one length; <c>dInput</c> may alias <c>dOutput</c>.</summary>
    public void BackwardErf(AcceleratorStream s, ArrayView<float> dInput, ArrayView<float> dOutput, ArrayView<float> input)
    {
        Check.SameLength(dInput, dOutput, nameof(dOutput));
        Check.SameLength(dInput, input, nameof(input));
        if (dInput.Length == 0) return;
        _backwardErf(s, Launch.Elementwise(_accelerator, dInput.Length), dInput, dOutput, input);
    }
}
